"""Twin uniform quantizer for post-GELU values (>= -0.17) (spec section 3).

Negative range for x < 0 with codes -2^(b-1)..0, positive range for x >= 0 with codes 0..2^(b-1)-1; the positive
scale D_pos is searched (grid around max(x) / (2^(b-1) - 0.5)).
- form "official": D_neg = 0.16997124254703522 / 2^(b-1), fixed; no relation between the two scales.
- form "paper": D_pos = 2^m D_neg with the largest integer m (possibly negative) for which the negative range
  still covers -0.16997..., i.e. m = floor(log2(D_pos 2^(b-1) / 0.16997...)).
"""
from __future__ import annotations

import torch

from ptq.quantizers.base import Quantizer, grid_candidates, log2_floor, register_quantizer, safe_scale

GELU_MIN = 0.16997124254703522  # -min over x of x * Phi(x)


@register_quantizer("twin_gelu")
class TwinGeluQuantizer(Quantizer):
    signed = True
    domain = "post_gelu"
    POSITIVE_KEYS = ("param", "scale_pos", "scale_neg")

    def neg_scale(self, d_pos: torch.Tensor) -> torch.Tensor:
        half = 2 ** (self.bits - 1)
        if self.form == "official":
            return torch.full_like(d_pos, GELU_MIN / half)
        m = log2_floor(d_pos * half / GELU_MIN)
        return d_pos * torch.pow(2.0, -m)

    def fake(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        d_pos = self.layout.expand(params, x.ndim)
        d_neg = self.neg_scale(d_pos)
        half = 2 ** (self.bits - 1)
        # x < 0 gives code 0 in the positive range and x >= 0 code 0 in the negative one, so the sum of the two
        # range quantizers equals choosing the range by the sign of x
        pos = torch.div(x, d_pos).round_().clamp_(0, half - 1).mul_(d_pos)
        return pos.add_(torch.div(x, d_neg).round_().clamp_(-half, 0).mul_(d_neg))

    def stat(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout.group_max(x, lambda v: v.clamp(min=0))

    def from_stat(self, stat: torch.Tensor) -> torch.Tensor:
        """Initial positive scale max(x) / (2^(b-1) - 0.5)."""
        return safe_scale(stat / (2 ** (self.bits - 1) - 0.5))

    def candidates(self, search) -> torch.Tensor:
        return grid_candidates(self.initial, search)

    def export(self) -> dict[str, torch.Tensor]:
        d_pos = self.param.detach().clone()
        half = 2 ** (self.bits - 1)
        return {"param": d_pos, "scale_pos": d_pos, "scale_neg": self.neg_scale(d_pos),
                "code_range_pos": torch.tensor([0, half - 1]), "code_range_neg": torch.tensor([-half, 0])}
