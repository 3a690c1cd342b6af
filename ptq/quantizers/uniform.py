"""Signed uniform quantizer (spec section 2): Q(x) = clamp(round(x / D), -2^(b-1), 2^(b-1) - 1) * D.

Block reconstruction may learn its weights' rounding (AdaRound) and its step D (LSQ); learned rounding is kept as
`rounding`, the offset in {-1, 0, 1} of each weight's code from nearest rounding (saved with the parameters).
"""
from __future__ import annotations

import torch

from ptq.quantizers.base import (
    IntegerForm,
    KeepsRounding,
    Quantizer,
    grid_candidates,
    qmax_signed,
    qmin_signed,
    register_quantizer,
    safe_scale,
)
from ptq.quantizers.kernels import SoftParts, soft_apply, ste_fake


@register_quantizer("uniform")
class UniformQuantizer(KeepsRounding, Quantizer):
    """Symmetric, no zero point, round half to even; one scale per group (tensor, q/k/v block, head, channel)."""

    learnable_rounding = True
    learnable_step = True
    POSITIVE_KEYS = ("param", "scale")
    integer_op = "QuantizeLinear"   # int8 codes, zero point 0 (at most 8 bits)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("rounding", None)   # learned rounding offsets (reconstruction); None: nearest

    def fake(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        scale = self.layout.expand(params, x.ndim)
        codes = torch.div(x, scale).round_()
        if self.rounding is not None:
            codes = codes.add_(self.rounding)
        return codes.clamp_(qmin_signed(self.bits), qmax_signed(self.bits)).mul_(scale)

    def from_stat(self, stat: torch.Tensor) -> torch.Tensor:
        """D0 = max|x| / (2^(b-1) - 0.5), per group."""
        return safe_scale(stat / (2 ** (self.bits - 1) - 0.5))

    def candidates(self, search) -> torch.Tensor:
        return grid_candidates(self.initial, search)

    def export(self) -> dict[str, torch.Tensor]:
        return self.with_rounding({"param": self.param.detach().clone(), "scale": self.param.detach().clone(),
                                   "code_range": torch.tensor([qmin_signed(self.bits), qmax_signed(self.bits)])})

    def integer_form(self) -> IntegerForm:
        return self._affine_form(self.param, torch.zeros_like(self.param), qmin_signed(self.bits),
                                 qmax_signed(self.bits))

    # -- reconstruction -----------------------------------------------------------------------------------------
    def floor_frac(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = torch.div(w, self.layout.expand(self.param, w.ndim))
        low = torch.floor(v)
        return v - low, torch.round(v) - low

    def soft_parts(self, w: torch.Tensor) -> SoftParts:
        scale = self.layout.expand(self.param, w.ndim)
        return SoftParts(torch.floor(torch.div(w, scale)), None, scale, qmin_signed(self.bits), qmax_signed(self.bits))

    def soft_fake(self, w: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return soft_apply(self.soft_parts(w), up)

    def harden(self, w: torch.Tensor, up: torch.Tensor) -> None:
        v = torch.div(w.detach(), self.layout.expand(self.param, w.ndim))
        self.rounding = torch.floor(v) + up.detach().to(v) - torch.round(v)

    def fake_ste(self, x: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        return ste_fake(x, self.layout.expand(param, x.ndim), None, qmin_signed(self.bits), qmax_signed(self.bits))
