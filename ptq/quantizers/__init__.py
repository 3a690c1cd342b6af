"""Operand quantizers, registered by name (uniform, twin_softmax, twin_gelu, and any file dropped here)."""
import importlib
import pkgutil

from ptq.quantizers.base import QUANTIZERS, Layout, Quantizer, register_quantizer

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["QUANTIZERS", "Layout", "Quantizer", "register_quantizer"]
