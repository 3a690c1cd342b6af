"""Every method's recipe stages, the base `init_minmax` / `search` included (base.py; RepQ-ViT: repq.py; AdaLog:
adalog.py). Each module registers its stages with `ptq.quant.stage.register_stage`; importing this package imports
every module in it, so a new method's module placed here is found (see docs/extending.md)."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
