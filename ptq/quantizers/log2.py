"""Log2 quantizer for post-softmax values (as in FQ-ViT / RepQ-ViT), the worked example of a user-added quantizer.

Q(x) = D 2^-q with q = clamp(round(-log2(x / D)), 0, 2^b - 2); the largest code 2^b - 1 stands for exactly zero.
D starts at max(x) and is searched on the usual grid. Selected with `quantizer=ptq4vit_log2` (conf/quantizer/):
one slot setting on top of ptq4vit.
"""
from __future__ import annotations

import torch

from ptq.quantizers.base import Quantizer, grid_candidates, register_quantizer, safe_scale


@register_quantizer("log2")
class Log2Quantizer(Quantizer):
    signed = False
    domain = "nonnegative"

    def fake(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        scale = self.layout.expand(params, x.ndim)
        top = 2 ** self.bits - 2
        ratio = (x / scale).clamp(min=0)
        code = torch.round(-torch.log2(ratio.clamp(min=2.0 ** -(top + 2))))
        out = torch.pow(2.0, -code.clamp(0, top)) * scale
        return torch.where(code > top, torch.zeros_like(out), out)

    def stat(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout.group_max(x, lambda v: v.clamp(min=0))

    def from_stat(self, stat: torch.Tensor) -> torch.Tensor:
        return safe_scale(stat)

    def candidates(self, search) -> torch.Tensor:
        return grid_candidates(self.initial, search)
