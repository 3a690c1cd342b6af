"""Twin uniform quantizer for post-softmax values in [0, 1] (spec section 3).

b bits = one range flag + (b-1)-bit unsigned codes 0..2^(b-1)-1 per range. Large range: D_L = 1 / (2^(b-1) - 1)
(fixed, covers [0, 1]); small range: D_S = 2^-m D_L, with the split m searched per layer over 0..m_max.
- form "paper": a value uses the small range when its code fits (round(x / D_S) <= 2^(b-1) - 1), else the large.
- form "official": the reference's arithmetic, which adds both terms:
  Q(x) = Q_L(clamp(x, s, 1)) + Q_S(clamp(x, 0, s)) with s = 2^-m (so a value above s is shifted up by s).
"""
from __future__ import annotations

import torch

from ptq.quantizers.base import Quantizer, register_quantizer


@register_quantizer("twin_softmax")
class TwinSoftmaxQuantizer(Quantizer):
    signed = False
    domain = "probability"
    # the reference searches the split with v float (SPEC section 5); the paper form quantizes v as at inference
    PARTNER = {"paper": "quantized", "official": "float"}
    OPTIONS = {"m_max": 19}   # the split m is searched over 0..m_max
    POSITIVE_KEYS = ("scale_large", "scale_small")   # param is the split m (0 is valid)

    @property
    def levels(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def scales(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(D_L, D_S) for split(s) m."""
        d_large = torch.full_like(m, 1.0 / self.levels)
        return d_large, d_large * torch.pow(2.0, -m)

    def fake(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        m = self.layout.expand(params, x.ndim)
        d_large, d_small = self.scales(m)
        n = self.levels
        if self.form == "official":
            s = torch.pow(2.0, -m)
            q_large = torch.clamp(torch.round(torch.minimum(torch.maximum(x, s), torch.ones_like(s)) / d_large), 0, n)
            q_small = torch.clamp(torch.round(torch.minimum(x.clamp(min=0), s) / d_small), 0, n)
            return q_large * d_large + q_small * d_small
        code_small = torch.round(x / d_small).clamp_(min=0)
        small = code_small <= n
        large = torch.clamp(torch.round(x / d_large), 0, n) * d_large
        return torch.where(small, code_small * d_small, large)

    def stat(self, x: torch.Tensor) -> None:
        return None  # the ranges are fixed by [0, 1]; nothing to observe

    def from_stat(self, stat: None) -> torch.Tensor:
        """The split before the search: m = 0 (one plain range) in paper form; in official form the smallest m
        whose large range maps s = 2^-m to code 0 (smaller m shift every value up, see module doc)."""
        if self.form == "official":
            m = 0
            while round(2.0 ** -m * self.levels) > 0:
                m += 1
            return torch.full((self.layout.groups,), float(m))
        return torch.zeros(self.layout.groups)

    def candidates(self, search) -> torch.Tensor:
        m = torch.arange(0, int(self.options["m_max"]) + 1, dtype=torch.float32, device=self.param.device)
        return m[:, None].expand(-1, self.layout.groups).contiguous()

    def export(self) -> dict[str, torch.Tensor]:
        d_large, d_small = self.scales(self.param.detach())
        return {"param": self.param.detach().clone(), "m": self.param.detach().clone(), "scale_large": d_large,
                "scale_small": d_small, "code_range": torch.tensor([0, self.levels])}
