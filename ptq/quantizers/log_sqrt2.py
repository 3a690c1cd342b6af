"""Log-sqrt(2) quantizer for post-softmax values (SPEC-repq.md section 3; RepQ-ViT).

Unsigned, one scale D per group, no zero point: c = round(-2 log2(x / D)), x_hat = D 2^(-c/2), computed as the
reference does, 2^(-ceil(c/2)) * (sqrt(2) if c is odd else 1) * D. Values above D saturate to D (c clamped at 0).
- form "official" (the reference): codes 0..2^b-1 all stand for non-zero levels and a value with c >= 2^b (or
  x = 0) becomes 0 -- an extra level, so a group takes up to 2^b + 1 values (`max_values`).
- form "paper" (the lab's b-bit reading, since the spec shows no other): the largest code 2^b-1 stands for 0, so
  non-zero levels use codes 0..2^b-2 and a group takes at most 2^b values (as `log2` does).
Initialization: D = quantile(x, p) for p in (0.999, 0.9999, 0.99999), the one of lowest mean squared error.
Not searched (`candidates` offers the usual grid around the initial D for a recipe that searches it).
"""
from __future__ import annotations

import math

import torch

from ptq.quantizers.base import Quantizer, grid_candidates, register_quantizer, safe_scale
from ptq.quantizers.percentile import NO_SCORE, PERCENTILES, KeepsValues, quantile


@register_quantizer("log_sqrt2")
class LogSqrt2Quantizer(KeepsValues, Quantizer):
    signed = False
    domain = "probability"
    searched = False
    POSITIVE_KEYS = ("param", "scale")

    @property
    def top_code(self) -> int:
        """The largest code of a non-zero level."""
        return 2 ** self.bits - 1 if self.form == "official" else 2 ** self.bits - 2

    def max_values(self) -> int:
        return 2 ** self.bits + (1 if self.form == "official" else 0)

    def quantize(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """x_hat for a scale broadcastable against x."""
        code = torch.round(-2 * torch.log2(x.clamp(min=0) / scale))   # x = 0 -> +inf
        zero = code > self.top_code
        code = code.clamp(0, self.top_code)
        odd = torch.remainder(code, 2) == 1
        level = torch.pow(2.0, -torch.ceil(code / 2)) * torch.where(odd, math.sqrt(2), 1.0) * scale
        return torch.where(zero, torch.zeros_like(level), level)

    def fake(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.quantize(x, self.layout.expand(params, x.ndim))

    def from_stat(self, stat: torch.Tensor) -> torch.Tensor:
        """The percentile of every observed value with the lowest mean squared error, per group."""
        values = stat.float()
        best = torch.full((values.shape[0],), NO_SCORE, device=values.device)
        best_d = torch.ones_like(best)
        for p in PERCENTILES:
            d = safe_scale(quantile(values, p))
            score = (values - self.quantize(values, d[:, None])).pow(2).mean(dim=1)
            better = score < best
            best, best_d = torch.where(better, score, best), torch.where(better, d, best_d)
        return best_d

    def candidates(self, search) -> torch.Tensor:
        return grid_candidates(self.initial, search)

    def export(self) -> dict[str, torch.Tensor]:
        return {"param": self.param.detach().clone(), "scale": self.param.detach().clone(),
                "code_range": torch.tensor([0, self.top_code])}
