"""Quantization core: config object (`PTQConfig`) + the transform that applies it (`quantize_model`)."""
from ptq.quant.calibrate import CalibReport, quantize_model
from ptq.quant.config import PTQConfig, resolve_ptq_config
from ptq.quant.params import load_quant_params, save_quant_params
from ptq.quant.wrap import quant_ops, set_quant_enabled, wrap_model

__all__ = ["PTQConfig", "resolve_ptq_config", "quantize_model", "CalibReport", "save_quant_params",
           "load_quant_params", "wrap_model", "quant_ops", "set_quant_enabled"]
