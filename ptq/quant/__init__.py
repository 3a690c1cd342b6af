"""Quantization core, bottom to top: the stage interface and registry (stage.py, with the plain records method.py
and calib_report.py), the engine (calibrate, search, wrap, params), every method's stages (stages/), the config
resolution (config.py) and the entry point (recipe.py: `quantize_model`, `run_recipe`)."""
from ptq.quant.calib_report import CalibReport
from ptq.quant.config import PTQConfig, resolve_ptq_config
from ptq.quant.params import load_quant_params, save_quant_params
from ptq.quant.recipe import quantize_model
from ptq.quant.wrap import quant_ops, set_quant_enabled, wrap_model

__all__ = ["PTQConfig", "resolve_ptq_config", "quantize_model", "CalibReport", "save_quant_params",
           "load_quant_params", "wrap_model", "quant_ops", "set_quant_enabled"]
