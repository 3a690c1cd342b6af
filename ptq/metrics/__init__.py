"""Search metrics, registered by name (mse, l1, cosine, pearson, hessian, weighted L2s, and any file dropped here)."""
import importlib
import pkgutil

from ptq.metrics.base import METRICS, NEEDS_GRAD, get_metric, register_metric

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["METRICS", "NEEDS_GRAD", "get_metric", "register_metric"]
