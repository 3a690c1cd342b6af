"""`fisher` (BRECQ): the squared error weighted element-wise by the squared task-loss gradient at the unit output,
per image (labels drawn from the float model's softmax, metric.fisher_draws of them, g^2 averaged over the draws),
normalized to mean 1 over the captured images."""
from __future__ import annotations

from ptq.recon.losses.base import float_capture, register_recon_loss, squared_error


def _capture(ctx):
    return float_capture(ctx, ctx.fisher_draws)


def _criterion(weight, rc):
    return lambda out, target, idx: squared_error(out, target, weight[idx], rc.rec_scale)


register_recon_loss("fisher", "squared_gradients", _capture, _criterion, ("fisher_draws",))
