"""Asymmetric uniform quantizer with a zero point, percentile-initialized (SPEC-repq.md section 2; RepQ-ViT).

Codes 0..2^b-1: q = clamp(round(x / D) + z, 0, 2^b - 1), x_hat = (q - z) D. `param` is the scale D [G]; the zero
point z [G] is a second buffer, exported and restored with it. Initialization per group: for p in
(0.999, 0.9999, 0.99999), hi = quantile(x, p), lo = quantile(x, 1 - p), D = (hi - lo) / (2^b - 1),
z = round(-lo / D); keep the (D, z) of the lowest mean squared error over the group's values (the first on ties).
Not searched (RepQ-ViT is calibration-only); `candidates` offers the usual scale grid with z fixed, for a recipe
that does search it. Both forms are the same arithmetic. Block reconstruction (ptq/recon/) may learn a weight's
rounding (AdaRound; kept as `rounding`, each code's offset in {-1, 0, 1} from nearest, saved with the parameters)
and the scale D (LSQ); the zero point stays where the calibration put it.

Choices the spec leaves open (written down here):
- a group whose percentiles coincide (D = 0, e.g. a constant channel) gets D = 1e-8 instead of dividing by zero;
- `z` may be fractional after the reparameterization (the mean of rounded zero points, not rounded again): the
  formula above is used as it is, `round(x / D) + z`.
"""
from __future__ import annotations

import torch

from ptq.quantizers.base import (
    IntegerForm,
    KeepsRounding,
    Layout,
    Quantizer,
    grid_candidates,
    register_quantizer,
    safe_scale,
)
from ptq.quantizers.kernels import SoftParts, soft_apply, ste_fake
from ptq.quantizers.percentile import NO_SCORE, PERCENTILES, KeepsValues, quantile


def quantize_asym(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int) -> torch.Tensor:
    """(clamp(round(x / D) + z, 0, 2^b - 1) - z) D with D, z broadcastable against x."""
    q = torch.div(x, scale).round_().add_(zero_point).clamp_(0, 2 ** bits - 1)
    return q.sub_(zero_point).mul_(scale)


def percentile_fit(values: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, z) per row of values [G, n]: the percentile pair of lowest mean squared error (SPEC-repq section 2)."""
    best = torch.full((values.shape[0],), NO_SCORE, dtype=values.dtype, device=values.device)
    best_d, best_z = torch.ones_like(best), torch.zeros_like(best)
    for p in PERCENTILES:
        hi, lo = quantile(values, p), quantile(values, 1 - p)
        d = safe_scale((hi - lo) / (2 ** bits - 1))
        z = torch.round(-lo / d)
        score = (values - quantize_asym(values, d[:, None], z[:, None], bits)).pow(2).mean(dim=1)
        better = score < best
        best = torch.where(better, score, best)
        best_d, best_z = torch.where(better, d, best_d), torch.where(better, z, best_z)
    return best_d, best_z


class AsymmetricRounding(KeepsRounding):
    """Mix-in for an asymmetric uniform quantizer whose `_split(params, ndim)` gives its scale and zero point
    broadcast against an operand: the fake quantization with learned rounding offsets, and what block
    reconstruction learns of it (AdaRound rounding, LSQ scale; the zero point stays fixed). Shared by
    `uniform_asym` (RepQ-ViT; zero point a buffer) and `uniform_grid` (AdaLog; zero point in `param`)."""

    def fake(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        s, z = self._split(params, x.ndim)
        if self.rounding is None:
            return quantize_asym(x, s, z, self.bits)
        codes = torch.div(x, s).round_().add_(self.rounding).add_(z).clamp_(0, 2 ** self.bits - 1)
        return codes.sub_(z).mul_(s)

    def integer_form(self) -> IntegerForm:
        """uint8 codes 0..2^b - 1 with the zero point (integer: a fractional one is not deployable)."""
        return self._affine_form(*self._group_params(), 0, 2 ** self.bits - 1)

    def floor_frac(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, _ = self._split(self.param, w.ndim)
        v = torch.div(w, s)
        low = torch.floor(v)
        return v - low, torch.round(v) - low

    def soft_parts(self, w: torch.Tensor) -> SoftParts:
        s, z = self._split(self.param, w.ndim)
        return SoftParts(torch.floor(torch.div(w, s)), z, s, 0, 2 ** self.bits - 1)

    def soft_fake(self, w: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return soft_apply(self.soft_parts(w), up)

    def harden(self, w: torch.Tensor, up: torch.Tensor) -> None:
        s, _ = self._split(self.param, w.ndim)
        v = torch.div(w.detach(), s)
        self.rounding = torch.floor(v) + up.detach().to(v) - torch.round(v)

    def fake_ste(self, x: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        s, z = self._split(param, x.ndim)
        return ste_fake(x, s, z.detach(), 0, 2 ** self.bits - 1)


@register_quantizer("uniform_asym")
class UniformAsymQuantizer(AsymmetricRounding, KeepsValues, Quantizer):
    signed = False
    domain = "real"
    searched = False
    learnable_rounding = True
    learnable_step = True
    POSITIVE_KEYS = ("param", "scale")   # the zero point may be any value
    integer_op = "QuantizeLinear"   # uint8 codes with an integer zero point (at most 8 bits)

    def __init__(self, bits: int, layout: Layout, form: str = "paper", partner: str = "quantized", **options):
        super().__init__(bits, layout, form=form, partner=partner, **options)
        self.register_buffer("zero_point", torch.zeros(layout.groups))
        self.register_buffer("rounding", None)   # learned rounding offsets (reconstruction); None: nearest

    def _split(self, params: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layout.expand(params, ndim), self.layout.expand(self.zero_point, ndim)

    def _group_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.param, self.zero_point

    def from_stat(self, stat: torch.Tensor) -> torch.Tensor:
        """The percentile fit of every observed value; sets the zero point, returns the scale."""
        scale, zero_point = percentile_fit(stat.float(), self.bits)
        self.zero_point.copy_(zero_point)
        return scale

    def candidates(self, search) -> torch.Tensor:
        return grid_candidates(self.initial, search)

    def to_per_tensor(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        """Become one group for the whole tensor with (scale, zero point): the layout change of the RepQ-ViT
        reparameterization (per-channel post-LayerNorm parameters folded away, SPEC-repq section 4)."""
        self.layout = Layout()
        self.param = scale.detach().reshape(1).to(self.param)
        self.zero_point = zero_point.detach().reshape(1).to(self.zero_point)
        self.initial = self.param.clone()
        self.initialized = True

    def export(self) -> dict[str, torch.Tensor]:
        return self.with_rounding({"param": self.param.detach().clone(), "scale": self.param.detach().clone(),
                                   "zero_point": self.zero_point.detach().clone(),
                                   "code_range": torch.tensor([0, 2 ** self.bits - 1])})
