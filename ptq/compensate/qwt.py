"""QwT: a linear side path per block, [x, 1] @ Theta ~ Y_fp - Y_q over all tokens (ptq/compensate/SPEC.md)."""
from __future__ import annotations

import torch

from ptq.compensate.registry import Compensator, Fit, register_compensator
from ptq.compensate.side import LinearSide
from ptq.compensate.solver import linear_least_squares
from ptq.schema import CompensateConfig


@register_compensator("qwt")
class QwT(Compensator):
    compat = ("paper", "official")

    def fit(self, x: torch.Tensor, y_fp: torch.Tensor, y_q: torch.Tensor, cc: CompensateConfig) -> Fit:
        w, b, r2 = linear_least_squares(x, y_fp - y_q, cc.ridge, cc.solver)
        d_in, d_out = w.shape
        return Fit(LinearSide(w, b, cc.precision), r2, params=d_in * d_out + d_out, macs_per_token=d_in * d_out)
