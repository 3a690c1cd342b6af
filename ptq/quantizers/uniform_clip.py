"""Asymmetric uniform quantizer whose range is a searched pair of clipping bounds (APHQ-ViT's matmul operands and
patch-embedding weight; ptq/quant/stages/APHQ_SPEC.md).

Q(x; s, z) = (clamp(round(x / s) + z, 0, 2^b - 1) - z) s with s = (u - l) / (2^b - 1), z = -round(l / s): the
arithmetic, learned rounding and learned step of `uniform_grid` (param [G, 2] = (s, z)); only the candidates differ.
They are pairs (u_i, l_j) of an upper and a lower bound, i, j = 0..C (C = `candidates`), per scale group:
- `clip: value` (matmul operands): u_i = P_.99 + i / C (P_.99999 - P_.99), l_j = P_.00001 + j / C (P_.01 - P_.00001),
  interpolated in value between quantiles P of the group's values;
- `clip: percentile` (the conv weight): u_i = P_{p_i}, l_j = P_{1 - p_j}, p_i = .99 + .0099 (i / (C - 1))^0.5 for
  i < C, p_C = 1.
The search (`phase`, set by the stage): `joint` scores the C + 1 pairs (u_i, l_i) and keeps the best; `refine` keeps
the current upper bound and searches the lower one (C + 1 candidates), then keeps that lower bound and searches
the upper one; `full` (the default) is joint then refine. The start (`start`) is the pair i = j = C - 1.
Forms: `official` takes the lower quantile levels as the reference evaluates them, 1 - p in float32 (1 - .99 =
0.00999999, 1 - .99999 = 1.001358e-05), and a tensor of more than 2^24 values' quantiles as the mean over 2^k
chunks; `paper` takes the levels exactly and all values. Choice left open: a pair with u = l gets s = 1e-8.
"""
from __future__ import annotations

import torch

from ptq.errors import PTQError, choices
from ptq.quantizers.base import Layout, Quantizer, register_quantizer
from ptq.quantizers.uniform_grid import MIN_SCALE, UniformGridQuantizer, chunked_quantiles

CLIPS = ("value", "percentile")
PHASES = ("full", "joint", "refine")


def percentile_levels(c: int) -> list[float]:
    """The conv weight's C + 1 upper percentile levels: .99 + .0099 (i / (C - 1))^0.5, i < C, then 1."""
    return [0.99 + (0.9999 - 0.99) * (i / (c - 1)) ** 0.5 for i in range(c)] + [1.0]


@register_quantizer("uniform_clip")
class UniformClipQuantizer(UniformGridQuantizer):
    self_scored = False          # searched on the op's output only (the reference has no self fit for these)
    OPTIONS = {"clip": "value", "candidates": 128}

    def __init__(self, bits: int, layout: Layout, form: str = "paper", partner: str = "quantized", **options):
        Quantizer.__init__(self, bits, layout, form=form, partner=partner, **options)
        if self.options["clip"] not in CLIPS:
            raise PTQError(f"unknown option clip={self.options['clip']} of quantizer uniform_clip; valid: "
                           f"{choices(CLIPS)}")
        if int(self.options["candidates"]) < 2:
            raise PTQError(f"impossible uniform_clip option candidates={self.options['candidates']}; valid: >= 2")
        self.param = torch.stack([torch.ones(layout.groups), torch.full((layout.groups,), float(2 ** (bits - 1)))],
                                 dim=1)
        self.register_buffer("rounding", None)
        self.phase = "full"
        self._bounds: tuple[torch.Tensor, torch.Tensor] | None = None
        self._index: torch.Tensor | None = None   # [G, 2]: (i, j) of the current parameter

    def z_count(self) -> int:
        return 1

    # -- candidates -------------------------------------------------------------------------------------------------
    def _levels(self, ps: list[float]) -> tuple[list[float], list[float]]:
        """(upper levels, lower levels 1 - p): the reference's lower levels in float32, or exact."""
        lower = ((1 - torch.tensor(ps, dtype=torch.float32)).tolist() if self.form == "official"
                 else [1.0 - p for p in ps])
        return ps, lower

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The candidate bounds (U [C + 1, G], L [C + 1, G]) of operand x."""
        values = self.layout.group_values(x.detach())
        c = int(self.options["candidates"])
        official = self.form == "official"
        if self.options["clip"] == "percentile":
            up, lo = self._levels(percentile_levels(c))
            q = chunked_quantiles(values, tuple(up + lo), chunk_average=official)
            return q[:c + 1], q[c + 1:]
        up, lo = self._levels([0.99, 0.99999])
        q = chunked_quantiles(values, tuple(up + lo), chunk_average=official)          # u0, u1, l0, l1
        frac = torch.linspace(0, 1, c + 1, dtype=values.dtype, device=values.device)[:, None]
        return q[0] + frac * (q[1] - q[0]), q[3] + frac * (q[2] - q[3])

    def pairs(self, iu: torch.Tensor, il: torch.Tensor) -> torch.Tensor:
        """Candidates [C', G, 2] of the bound indices iu, il [C', G]."""
        up, lo = self._bounds
        u, l_ = up.gather(0, iu), lo.gather(0, il)
        s = ((u - l_) / (2 ** self.bits - 1)).clamp(min=MIN_SCALE)
        return torch.stack([s, -(l_ / s).round()], dim=-1)

    def _ramp(self) -> torch.Tensor:
        n, g = self._bounds[0].shape
        return torch.arange(n, device=self._bounds[0].device)[:, None].expand(n, g)

    def _stage(self, which: str):
        """A refine stage: `lower` keeps the upper index of the survivor and varies the lower one, `upper` the
        converse; the survivor's indices are those of the candidate it equals (the first such)."""
        def make(surv: torch.Tensor | None) -> torch.Tensor:
            idx = self._index if surv is None else self._locate(surv[0])
            if idx is None:
                raise PTQError("uniform_clip: a refine stage needs a parameter from its own candidates; valid: "
                               "phase joint (or full) first")
            ramp = self._ramp()
            iu = idx[:, 0].expand_as(ramp) if which == "lower" else ramp
            il = ramp if which == "lower" else idx[:, 1].expand_as(ramp)
            return self._remember(iu, il)
        return make

    def _remember(self, iu: torch.Tensor, il: torch.Tensor) -> torch.Tensor:
        cand = self.pairs(iu, il)
        self._last = (cand, iu, il)
        return cand

    def _locate(self, p: torch.Tensor) -> torch.Tensor | None:
        """(i, j) [G, 2] of the first of the last candidates equal to p [G, 2] in every group (None: not one)."""
        cand, iu, il = self._last
        hit = (cand == p[None].to(cand)).all(dim=-1)                                  # [C', G]
        if not bool(hit.any(dim=0).all()):
            return None
        k = hit.to(torch.int8).argmax(dim=0)                                          # [G]
        g = torch.arange(cand.shape[1], device=cand.device)
        return torch.stack([iu[k, g], il[k, g]], dim=1)

    def start(self, x: torch.Tensor) -> None:
        """Bounds from x; the pair i = j = C - 1."""
        self._bounds = self.bounds(x)
        ramp = self._ramp()
        self._grid = self._remember(ramp, ramp)
        c = ramp.shape[0]
        self._index = torch.full((ramp.shape[1], 2), c - 2, dtype=torch.long, device=ramp.device)
        self.set_param(self._grid[c - 2])

    def initialize(self, x: torch.Tensor) -> None:
        self.start(x)

    def set_param(self, p: torch.Tensor) -> None:
        super().set_param(p)
        if getattr(self, "_last", None) is not None and p.shape == self.param.shape:
            self._index = self._locate(self.param)

    def beam_plan(self, x: torch.Tensor) -> list[tuple]:
        if self.phase not in PHASES:
            raise PTQError(f"uniform_clip phase {self.phase}; valid: {choices(PHASES)}")
        if self._bounds is None or self.phase in ("full", "joint"):
            self._bounds = self.bounds(x)
        joint = [(lambda _surv: self._remember(self._ramp(), self._ramp()), 1)]
        refine = [(self._stage("lower"), 1), (self._stage("upper"), 1)]
        return {"full": joint + refine, "joint": joint, "refine": refine}[self.phase]
