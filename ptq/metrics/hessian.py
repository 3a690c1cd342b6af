"""Hessian-guided metric (spec section 4): -(g (O - Ô))^2 with g = dL/dO per sample, i.e. the diagonal
per-sample Fisher approximation of the task-loss Hessian at the layer output. g2 = g^2 (or E[g^2] over sampled
labels for grad=fisher) is computed once per layer by ptq.quant.gradients."""
from __future__ import annotations

import torch

from ptq.metrics.base import reduce_elementwise, register_metric


@register_metric("hessian", needs_grad=True)
def hessian(out_hat: torch.Tensor, out: torch.Tensor, g2: torch.Tensor | None = None) -> torch.Tensor:
    if g2 is None:
        raise ValueError("the hessian metric needs the squared output gradient g2")
    return reduce_elementwise(out_hat.sub_(out).square_().mul_(g2).neg_())
