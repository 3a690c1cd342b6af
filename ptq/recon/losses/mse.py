"""`mse`: the unit's output squared error, summed over dim 1 and averaged over the others (nothing captured)."""
from __future__ import annotations

from ptq.recon.losses.base import float_capture, register_recon_loss, squared_error


def _capture(ctx):
    return float_capture(ctx)


def _criterion(stats, rc):
    return lambda out, target, idx: squared_error(out, target, None, rc.rec_scale)


register_recon_loss("mse", "nothing", _capture, _criterion)
