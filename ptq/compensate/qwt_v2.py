"""QwT-v2 as the lab reads the paper's idea (arXiv 2505.20932; no reference code was found): a per-channel affine
on the block's quantized output, g * y_q + b, fitted per channel by least squares to the float output; it folds
into the next requantization (scale and offset per channel), so it adds no matmul."""
from __future__ import annotations

import torch

from ptq.compensate.registry import Compensator, Fit, register_compensator
from ptq.compensate.side import ChannelAffine
from ptq.compensate.solver import channel_affine_least_squares
from ptq.schema import CompensateConfig


@register_compensator("qwt_v2")
class QwTv2(Compensator):
    compat = ("paper",)

    def fit(self, x: torch.Tensor, y_fp: torch.Tensor, y_q: torch.Tensor, cc: CompensateConfig) -> Fit:
        g, b, r2 = channel_affine_least_squares(y_q, y_fp, cc.ridge)
        return Fit(ChannelAffine(g, b), r2, params=2 * g.numel(), macs_per_token=g.numel())
