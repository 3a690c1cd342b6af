"""Signed uniform quantizer (spec section 2): Q(x) = clamp(round(x / D), -2^(b-1), 2^(b-1) - 1) * D."""
from __future__ import annotations

import torch

from ptq.quantizers.base import Quantizer, grid_candidates, qmax_signed, qmin_signed, register_quantizer, safe_scale


@register_quantizer("uniform")
class UniformQuantizer(Quantizer):
    """Symmetric, no zero point, round half to even; one scale per group (tensor, q/k/v block, head, channel)."""

    def fake(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        scale = self.layout.expand(params, x.ndim)
        return torch.div(x, scale).round_().clamp_(qmin_signed(self.bits), qmax_signed(self.bits)).mul_(scale)

    def from_stat(self, stat: torch.Tensor) -> torch.Tensor:
        """D0 = max|x| / (2^(b-1) - 0.5), per group."""
        return safe_scale(stat / (2 ** (self.bits - 1) - 0.5))

    def candidates(self, search) -> torch.Tensor:
        return grid_candidates(self.initial, search)

    def export(self) -> dict[str, torch.Tensor]:
        return {"param": self.param.detach().clone(), "scale": self.param.detach().clone(),
                "code_range": torch.tensor([qmin_signed(self.bits), qmax_signed(self.bits)])}
