"""Asymmetric uniform quantizer whose zero point is searched on a fixed integer grid (SPEC-adalog.md sections 2.1,
3.2 and 3.4; AdaLog).

Q(x; s, z) = (clamp(round(x / s) + z, 0, 2^b - 1) - z) s. Unlike `uniform_asym` (RepQ-ViT: percentile fit, z from
the data minimum), both s and the integer z are searched: `param` is [G, 2] = (s, z) per scale group, so a
candidate is one (s, z) pair per group and the beam search (ptq/quant/fpcs.py) keeps pairs.

Candidates (section 3.2), per group with linearly interpolated quantiles P_p of its values:
d_lo = P_0.9 - P_0.1, d_hi = P_1 - P_0, s_i = (d_lo + i / (S - 1) (d_hi - d_lo)) / (2^b - 1), i = 0..S-1, and
z_j = n - Z / 2 + j, j = 0..Z-1 (n = 2^(b-1)); candidate k = j S + i, Z S = `candidates` (128). Z by operand
(option `z_grid`): `weight` (linear weights, matmul operands) min(16, n); `input` (linear inputs) min(16, 2n),
scales clamped to >= 1e-4; `conv` (patch-embedding weights) n; `weight_prefix`: the linear-weight / matmul grid
before the reference's commit 75a57d2, Z = n (differs from `weight` at 6 bits only: 32 x 4, z in 16..47), which
the reference README's 6-bit numbers used (SPEC-adalog 3.2, quirk 17); `weight_wide` (APHQ-ViT's linear weights)
min(16, 2n) like `input` but without its clamp; `zero` one zero point, z = 0, all `candidates` scales (clamped like
`input`); `post_relu` is `zero` in the paper form and `input` in the official one (APHQ-ViT's post-ReLU fc2 input,
ptq/quant/stages/APHQ_SPEC.md). With `stages: 1` the search is the plain grid (no beam refinement).
Beam refinement (section 3.4): keep `beam` pairs per group; each spawns e = candidates / beam children
(s + (k / (e - 1) - 1/2) delta_t, z), delta_1 = s_1 - s_0, delta_{t+1} = delta_t / (e - 1/2), `stages` stages.

Forms: `official` takes the quantiles of a tensor of more than 2^24 values as the mean over 2^k contiguous
chunks (the reference's quantile routine refuses larger inputs; P_1 is then a mean of chunk maxima), and builds
the candidates with the reference's float32 details: the lower quantile at 1 - 0.9 computed in float32
(0.100000024, not 0.1), the fractions i / (S - 1) and k / (e - 1) as torch.linspace(0, 1, .) gives them (a few
differ from the quotient in the last bit), refined input scales clamped to >= 1e-4 like the grid's. Each moves a
candidate by about one float32 ulp, enough to flip near-ties of the beam search (issue 22). `paper` takes exact
quantiles and the plain quotients. Everything else is the same arithmetic. Choice left open by the spec: a group of
identical values (d_hi = 0) gets s = 1e-8 instead of a zero scale.
"""
from __future__ import annotations

import math

import torch

from ptq.errors import PTQError, choices
from ptq.quantizers.base import Layout, Quantizer, refinements, register_quantizer
from ptq.quantizers.uniform_asym import AsymmetricRounding

CHUNK_LIMIT = 2 ** 24
# the reference's lower quantile: 1 - 0.9 evaluated in float32 (0.100000024), not 0.1 (0.1000000015 in float32)
REFERENCE_P_LOW = float(1.0 - torch.tensor(0.9, dtype=torch.float32))
Z_GRIDS = ("weight", "input", "conv", "weight_prefix", "weight_wide", "zero", "post_relu")
MIN_SCALE = 1e-8


def interpolated_quantiles(values: torch.Tensor, ps: tuple[float, ...]) -> torch.Tensor:
    """Quantiles of every row of values [G, n] by linear interpolation between order statistics -> [len(ps), G]:
    torch.quantile (the reference's routine, so the same bits) up to its 2^24-element limit, the same definition
    computed from the sorted values above it."""
    if values.shape[1] <= CHUNK_LIMIT:
        return torch.quantile(values.float(), torch.tensor(ps, dtype=torch.float32, device=values.device), dim=1)
    v, _ = torch.sort(values.float(), dim=1)
    n = v.shape[1]
    out = []
    for p in ps:
        pos = p * (n - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, n - 1)
        frac = pos - lo
        out.append(v[:, lo] + (v[:, hi] - v[:, lo]) * frac)
    return torch.stack(out)


def chunked_quantiles(values: torch.Tensor, ps: tuple[float, ...], chunk_average: bool) -> torch.Tensor:
    """Quantiles per row -> [len(ps), G]; with chunk_average, a row of more than 2^24 values is split into the
    fewest 2^k contiguous chunks of at most 2^24 values and the chunks' quantiles are averaged (the reference)."""
    n = values.shape[1]
    if not chunk_average or n <= CHUNK_LIMIT:
        return interpolated_quantiles(values, ps)
    k = 1
    while math.ceil(n / 2 ** k) > CHUNK_LIMIT:
        k += 1
    parts = torch.tensor_split(values, 2 ** k, dim=1)
    return torch.stack([interpolated_quantiles(p, ps) for p in parts]).mean(dim=0)


@register_quantizer("uniform_grid")
class UniformGridQuantizer(AsymmetricRounding, Quantizer):
    signed = False
    domain = "real"
    searched = True
    beam_searched = True        # offers a beam plan (ptq/quant/fpcs.py), not only a flat candidate list
    self_scored = True          # inside a linear, first fitted to its own operand (weight / input MSE)
    learnable_rounding = True
    learnable_step = True
    POSITIVE_KEYS = ("scale",)   # param [G, 2] holds (scale, zero point)
    integer_op = "QuantizeLinear"   # uint8 codes with its (integer) zero point, at most 8 bits
    OPTIONS = {"z_grid": "weight", "candidates": 128, "beam": 16, "stages": 6}

    def __init__(self, bits: int, layout: Layout, form: str = "paper", partner: str = "quantized", **options):
        super().__init__(bits, layout, form=form, partner=partner, **options)
        if self.options["z_grid"] not in Z_GRIDS:
            raise PTQError(f"unknown option z_grid={self.options['z_grid']} of quantizer uniform_grid; valid: "
                           f"{choices(Z_GRIDS)}")
        c, w = int(self.options["candidates"]), int(self.options["beam"])
        if c < 2 or w < 1 or c % w or int(self.options["stages"]) < 1 or c % self.z_count():
            raise PTQError(f"impossible uniform_grid options candidates={c} beam={w} stages={self.options['stages']}"
                           f" at {bits} bits; valid: candidates a multiple of beam and of the {self.z_count()} zero "
                           f"points, stages >= 1")
        self.param = torch.stack([torch.ones(layout.groups), torch.full((layout.groups,), float(2 ** (bits - 1)))],
                                 dim=1)
        self.register_buffer("rounding", None)   # learned rounding offsets (reconstruction); None: nearest

    # -- arithmetic ---------------------------------------------------------------------------------------------
    def _split(self, params: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.layout.expand(params[..., 0].clamp(min=MIN_SCALE), ndim)
        return s, self.layout.expand(params[..., 1], ndim)

    def _group_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.param[:, 0].clamp(min=MIN_SCALE), self.param[:, 1]

    def from_stat(self, stat: torch.Tensor | None) -> torch.Tensor:
        """Min-max start (for recipes that initialize by min-max): s = (max - min) / (2^b - 1), z = round(-min / s)."""
        lo, hi = stat[:, 0], stat[:, 1]
        s = ((hi - lo) / (2 ** self.bits - 1)).clamp(min=MIN_SCALE)
        return torch.stack([s, torch.round(-lo / s).clamp(0, 2 ** self.bits - 1)], dim=1)

    def stat(self, x: torch.Tensor) -> torch.Tensor:
        v = self.layout.group_values(x.detach())
        return torch.stack([v.amin(dim=1), v.amax(dim=1)], dim=1)

    def observe(self, x: torch.Tensor) -> None:
        s = self.stat(x)
        prev = getattr(self, "_stat", None)
        self._stat = s if prev is None else torch.stack([torch.minimum(prev[:, 0], s[:, 0]),
                                                         torch.maximum(prev[:, 1], s[:, 1])], dim=1)

    # -- candidates -------------------------------------------------------------------------------------------------
    def z_grid(self) -> str:
        """The zero-point grid in use: `post_relu` resolves by form (paper: `zero`, official: `input`)."""
        g = self.options["z_grid"]
        return ("zero" if self.form == "paper" else "input") if g == "post_relu" else g

    def z_count(self) -> int:
        n = 2 ** (self.bits - 1)
        return {"weight": min(16, n), "input": min(16, 2 * n), "conv": n, "weight_prefix": n,
                "weight_wide": min(16, 2 * n), "zero": 1}[self.z_grid()]

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """The section 3.2 candidates of operand x -> [C, G, 2], candidate k = j S + i."""
        values = self.layout.group_values(x.detach())
        official = self.form == "official"
        p = chunked_quantiles(values, (REFERENCE_P_LOW if official else 0.1, 0.9, 0.0, 1.0), chunk_average=official)
        d_lo, d_hi = p[1] - p[0], p[3] - p[2]
        zc = self.z_count()
        sc = int(self.options["candidates"]) // zc
        if official:   # the reference's fractions i / (S - 1): torch.linspace's (a few differ in the last bit)
            frac = torch.linspace(0, 1, sc, dtype=values.dtype, device=values.device)[:, None]
        else:
            frac = torch.arange(sc, dtype=values.dtype, device=values.device)[:, None] / max(sc - 1, 1)
        scales = (d_lo + frac * (d_hi - d_lo)) / (2 ** self.bits - 1)                        # [S, G]
        if self.z_grid() in ("input", "zero"):
            scales = scales.clamp(min=1e-4)
        scales = scales.clamp(min=MIN_SCALE)
        n = 2 ** (self.bits - 1)
        z0 = 0 if self.z_grid() == "zero" else n - zc // 2
        zs = torch.arange(zc, dtype=values.dtype, device=values.device) + z0                 # [Z]
        s_all = scales.repeat(zc, 1)                                                         # k = j S + i
        z_all = zs.repeat_interleave(sc)[:, None].expand_as(s_all)
        return torch.stack([s_all, z_all], dim=-1)

    def candidates(self, search) -> torch.Tensor:
        """A flat candidate list for a search stage that is not a beam search: the section 3.2 grid around the
        operand it was initialized on (requires `initialize` / `start` on a tensor first)."""
        if getattr(self, "_grid", None) is None:
            raise PTQError("uniform_grid needs its operand's values for candidates; valid: a beam-search recipe "
                           "(quantizer.recipe [beam_search]) or initialize it on a tensor first")
        return self._grid

    def initialize(self, x: torch.Tensor) -> None:
        self._grid = self.grid(x)
        super().initialize(x)

    def start(self, x: torch.Tensor) -> None:
        """The starting point when no self-fit precedes the search (matmul operands, section 3.5 d-e): grid index
        C - 2 (126: the largest zero point with the second-largest scale)."""
        g = self.grid(x)
        self._grid = g
        self.set_param(g[g.shape[0] - 2])

    def beam_plan(self, x: torch.Tensor) -> list[tuple]:
        """[(make candidates from the survivors [W, G, 2] (None first), keep)] -- section 3.4."""
        grid = self.grid(x)
        self._grid = grid
        beam, stages = int(self.options["beam"]), int(self.options["stages"])
        e = int(self.options["candidates"]) // beam
        official = self.form == "official"
        floor = 1e-4 if official and self.z_grid() in ("input", "zero") else None
        return [(lambda _surv: grid, beam if stages > 1 else 1),
                *refinements(grid[1, :, 0] - grid[0, :, 0], e, stages - 1, beam, linspace=official, floor=floor)]

    # -- state ------------------------------------------------------------------------------------------------
    def to_per_tensor(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        """Become one group for the whole tensor with (s, z): the layout change of the LayerNorm
        reparameterization (section 2.6)."""
        self.layout = Layout()
        self.param = torch.stack([scale.detach().reshape(1), zero_point.detach().reshape(1)], dim=1).to(self.param)
        self.initial = self.param.clone()
        self.initialized = True

    def export(self) -> dict[str, torch.Tensor]:
        return self.with_rounding({"param": self.param.detach().clone(), "scale": self.param[:, 0].detach().clone(),
                                   "zero_point": self.param[:, 1].detach().clone(),
                                   "code_range": torch.tensor([0, 2 ** self.bits - 1])})
