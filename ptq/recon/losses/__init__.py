"""Reconstruction losses, registered by name (mse, fisher, aph, fisher_dplr, and any file dropped here).

Each loss declares what it needs captured at the unit output (nothing, squared gradients, gradient samples or a
finite-difference Hessian diagonal), computes it in the reconstruction stage's capture pass from the
reconstruction images, and turns it into the criterion the unit is optimized with. What each computes and where
the reference codes depart from their papers: ptq/recon/losses/SPEC.md."""
import importlib
import pkgutil

from ptq.recon.losses.base import RECON_LOSSES, ReconLoss, get_recon_loss, register_recon_loss

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "probe"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["RECON_LOSSES", "ReconLoss", "get_recon_loss", "register_recon_loss"]
