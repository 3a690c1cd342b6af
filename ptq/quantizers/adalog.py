"""AdaLog: the adaptive-base logarithmic quantizer (SPEC-adalog.md sections 2.3-2.5; Wu et al., ECCV 2024).

Log base 2^(q / r) with r = 37 fixed and the integer q searched (q = 37: base 2). `param` is [G, 2] = (s, q) per
scale group (one group per tensor in AdaLog): s is the clipping maximum, not a step.
- code: u = clamp(x / s, 1e-15, 1), c = round(-log2(u) r / q), m = [c < 2^b], c = clamp(c, 0, 2^b - 1).
- dequant `exact`: m s 2^(-c q / r); `lut` (the hardware form): with k = c q, m s 2^(-floor(k / r)) T_b[k mod r],
  T_b[j] = round(2^(-j / r) D_b) / D_b, D_b = 2^(b+1) - 2 (a right shift and one table lookup).
- option `shift` (beta; post-GELU: 0.16997... = -min GELU): Q(x) = AdaLog(x + beta) - beta. After calibration (or
  reconstruction) the recipe stage `fold_shift` moves -beta into the next linear's bias and sets `folded`: the
  quantizer then returns AdaLog(x + beta).
- option `fixed_scale` (post-softmax): s stays 1; only q is searched (a plain argmax over the q list).

Forms: `official` = the reference: 2^b non-zero codes plus zero by masking (2^b + 1 values), the 1e-15 floor (so
Q(0) is about 1e-15 s, not 0, when round(49.83 r / q) < 2^b), the table in search and inference and the exact
power while reconstruction trains; its own search (a candidate set) reads the reference's search table
(round(t / d) d in float32, within an ulp of T_b, `reference_search_table`) and its post-GELU refinements start from
delta_1 = s_1 - s_0 with linspace fractions (issue 22: the reference's candidates bit for bit). `paper` (the
lab's clean form): the largest code stands for zero (a strict b-bit code: 2^b values), x <= 0 gives exactly 0,
and the dequantization named by option `dequant` is used everywhere,
reconstruction included (its gradient through the exact power, straight-through).
Choice left open: the reference searches the post-softmax q without the 1e-15 floor; here the floor (official) is
the same in search and inference -- the two differ by about 1e-15 s per exact zero.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from ptq.errors import PTQError, choices
from ptq.quantizers.base import Layout, Quantizer, refinements, register_quantizer

GELU_SHIFT = 0.16997124254703522   # -min GELU(x): the post-GELU shift of section 2.5
FLOOR = 1e-15
DEQUANT = ("lut", "exact")


def adalog_table(bits: int, r: int = 37, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """T_b[j] = round(2^(-j / r) D_b) / D_b, j = 0..r-1, D_b = 2^(b+1) - 2 (computed in float64)."""
    d = 2 ** (bits + 1) - 2
    j = torch.arange(r, dtype=torch.float64)
    return (torch.round(torch.pow(2.0, -j / r) * d) / d).to(dtype=dtype, device=device)


def reference_search_table(bits: int, r: int = 37) -> torch.Tensor:
    """The table the reference's searches use (its inference uses T_b): round(t_j / d) d evaluated in float32,
    t_j = 2^(-j / r) and d = 1 / D_b each rounded to float32 first; within one float32 ulp of T_b[j], and equal to
    it for 11-17 of the 37 entries."""
    d = 1.0 / (2 ** (bits + 1) - 2)
    t = torch.tensor([2.0 ** (-j / r) for j in range(r)], dtype=torch.float32)
    return torch.round(t / d) * d


def nearest_rank(sorted_values: torch.Tensor, p: float) -> torch.Tensor:
    """The p-quantile of ascending values [n] by nearest rank: element ceil(n p) - 1 (0-based)."""
    n = sorted_values.numel()
    return sorted_values[max(0, min(n - 1, math.ceil(n * p) - 1))]


@register_quantizer("adalog")
class AdaLogQuantizer(Quantizer):
    signed = False
    domain = "nonnegative"
    searched = True
    beam_searched = True
    self_scored = False         # started from its percentiles (or s = 1), never fitted to its own operand
    learnable_step = True
    POSITIVE_KEYS = ("scale", "q")   # param [G, 2] holds (scale, q); q divides the code
    OPTIONS = {"r": 37, "shift": 0.0, "fixed_scale": False, "dequant": "lut", "q_first": 10, "q_count": 128,
               "q_beam": 8, "scale_points": 16, "beam": 32, "stages": 6}

    def __init__(self, bits: int, layout: Layout, form: str = "paper", partner: str = "quantized", **options):
        super().__init__(bits, layout, form=form, partner=partner, **options)
        o = self.options
        if o["dequant"] not in DEQUANT:
            raise PTQError(f"unknown option dequant={o['dequant']} of quantizer adalog; valid: {choices(DEQUANT)}")
        if int(o["r"]) < 1 or int(o["q_first"]) < 1 or int(o["q_count"]) < 1 or int(o["beam"]) < 1 \
                or int(o["q_beam"]) < 1 or int(o["scale_points"]) < 2 or int(o["stages"]) < 1:
            raise PTQError(f"impossible adalog options {o}; valid: r, q_first, q_count, beam, q_beam, stages >= 1, "
                           f"scale_points >= 2")
        self.r = int(o["r"])
        self.shift = float(o["shift"])
        self.param = torch.stack([torch.ones(layout.groups), torch.full((layout.groups,), float(self.r))], dim=1)
        self.register_buffer("table", adalog_table(bits, self.r))
        # official: a candidate set (the quantizer's own search) is dequantized through the reference's search table
        self.register_buffer("search_table", reference_search_table(bits, self.r) if form == "official"
                             else self.table.clone(), persistent=False)
        self.register_buffer("folded", torch.zeros(()))

    # -- arithmetic ---------------------------------------------------------------------------------------------
    @property
    def top_code(self) -> int:
        return 2 ** self.bits - 1 if self.form == "official" else 2 ** self.bits - 2

    def max_values(self) -> int:
        return 2 ** self.bits + (1 if self.form == "official" else 0)

    def raw_codes(self, x: torch.Tensor, s: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        """round(-log2(u) r / q) before clamping (>= 0; above top_code: the value becomes zero); q None: the
        unrounded -log2(u) r."""
        if self.form == "official":
            u = torch.div(x, s).clamp_(FLOOR, 1.0)
        else:
            u = torch.div(x, s).clamp_(0.0, 1.0)          # 0 -> code +inf -> exactly zero
        v = torch.log2_(u).mul_(-self.r)
        return v if q is None else v.div_(q).round_()

    def codes(self, x: torch.Tensor, s: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(code c clamped to the non-zero codes, mask of values that are not zero)."""
        c = self.raw_codes(x, s, q)
        keep = c <= self.top_code
        return c.clamp_(0, self.top_code), keep

    def dequant(self, c: torch.Tensor, s: torch.Tensor, q: torch.Tensor, how: str,
                search: bool = False) -> torch.Tensor:
        if how == "exact":
            return torch.pow(2.0, -c * q / self.r) * s
        k = c * q                                          # integers, exact in float32 below 2^24
        e = torch.floor(k / self.r)
        j = (k - e * self.r).long().clamp_(0, self.r - 1)
        table = self.search_table if search else self.table
        return torch.pow(2.0, -e) * table.to(s.dtype)[j] * s

    def _out_shift(self) -> float:
        return 0.0 if bool(self.folded) else self.shift

    def _level_tables(self, p: torch.Tensor, how: str, search: bool = False) -> torch.Tensor:
        """Every value candidate p [C, 2] can take -> [C, L + 1]: the dequant formula on its codes 0..L-1 (minus
        the shift, once per level instead of once per value), then a zero at index L; `search`: of a candidate
        set (the search table)."""
        codes = torch.arange(self.top_code + 1, dtype=p.dtype, device=p.device)
        levels = self.dequant(codes[None, :], p[:, :1], p[:, 1:], how, search)          # [C, L]
        levels = torch.cat([levels, torch.zeros_like(levels[:, :1])], dim=1)
        return levels - self._out_shift() if self._out_shift() else levels

    @staticmethod
    def _gather(levels: torch.Tensor, idx: torch.Tensor, per_candidate: bool) -> torch.Tensor:
        """levels [C, W] at the raw codes idx ([C, *shape] if per_candidate, else one candidate's [*shape]); a
        masked value has a code > top_code, clamped to W - 1: the zero."""
        width = levels.shape[1]
        idx = idx.clamp_(max=width - 1)
        if per_candidate and levels.shape[0] > 1:   # candidate c's levels start at c * width (exact in float)
            idx += (torch.arange(levels.shape[0], device=idx.device, dtype=idx.dtype) * width).reshape(
                -1, *([1] * (idx.ndim - 1)))
        # an int32 index_select is the fastest CPU gather (a third of take's time)
        return levels.reshape(-1).index_select(0, idx.int().reshape(-1)).reshape(idx.shape)

    def _quantize(self, x: torch.Tensor, params: torch.Tensor, how: str) -> torch.Tensor:
        xs = x + self.shift if self.shift else x
        if self.layout.groups == 1:
            # one group: look the value up in the candidate's level table (the same dequant formula evaluated on
            # its 2^b codes, plus a zero): identical values, one gather instead of the per-element power
            if params.ndim > 2 and params.shape[0] > 1:      # a candidate set: assembled from its chunks
                out = xs.new_empty(params.shape[0], *xs.shape)
                for sel, values in self._candidate_chunks(xs, params, params.shape[0], how):
                    out[sel] = values
                return out
            idx = self.raw_codes(xs, self.layout.expand(params[..., 0], x.ndim),
                                 self.layout.expand(params[..., 1], x.ndim))
            return self._gather(self._level_tables(params.reshape(-1, 2), how, params.ndim > 2), idx,
                                params.ndim > 2)
        s = self.layout.expand(params[..., 0], x.ndim)
        q = self.layout.expand(params[..., 1], x.ndim)
        c, keep = self.codes(xs, s, q)
        out = torch.where(keep, self.dequant(c, s, q, how), torch.zeros((), dtype=x.dtype, device=x.device))
        return out - self._out_shift() if self._out_shift() else out

    def fake_chunks(self, x: torch.Tensor, params: torch.Tensor,
                    step: int) -> Iterator[tuple[slice | torch.Tensor, torch.Tensor]]:
        """One group: the shifted operand once for all candidates, and -log2(x / s) r once per distinct scale of
        the whole candidate set (the q list: once; the scale x q grid: once per scale point) instead of once per
        chunk; candidates of one scale come together. The same operations on the same values as `fake`."""
        if self.layout.groups != 1 or params.ndim != 3:
            yield from super().fake_chunks(x, params, step)
            return
        yield from self._candidate_chunks(x + self.shift if self.shift else x, params, step,
                                          self.options["dequant"])

    def _candidate_chunks(self, xs: torch.Tensor, params: torch.Tensor, step: int,
                          how: str) -> Iterator[tuple[slice | torch.Tensor, torch.Tensor]]:
        """One group, candidates params [C, 1, 2], the shifted operand xs: (which, values) at most `step` at a time
        (see fake_chunks); `fake` of a candidate set assembles these, so both give the same bits."""
        p = params.reshape(-1, 2)
        lead = (-1, *([1] * xs.ndim))
        levels = self._level_tables(p, how, search=True)
        scales, which = torch.unique(p[:, 0], return_inverse=True)
        if len(scales) == p.shape[0]:   # every scale distinct (the refinement stages): in order, chunk by chunk
            for c0 in range(0, p.shape[0], step):
                sel = slice(c0, c0 + step)
                idx = self.raw_codes(xs, p[sel, 0].reshape(lead), p[sel, 1].reshape(lead))
                yield sel, self._gather(levels[sel], idx, True)
            return
        for u in range(len(scales)):
            members = (which == u).nonzero().flatten()
            v = self.raw_codes(xs, scales[u:u + 1].reshape(lead), None)[0]
            for c0 in range(0, len(members), step):
                sel = members[c0:c0 + step]
                idx = v.div(p[sel, 1].reshape(lead)).round_()
                yield sel, self._gather(levels[sel], idx, True)

    def fake(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self._quantize(x, params, self.options["dequant"])

    def stat(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout.group_max(x, lambda v: v + self.shift)

    def from_stat(self, stat: torch.Tensor | None) -> torch.Tensor:
        """Min-max start for recipes that initialize by min-max: s = max(x + shift) (1 with fixed_scale), q = r."""
        s = torch.ones(self.layout.groups) if self.options["fixed_scale"] or stat is None else stat.clamp(min=1e-8)
        return torch.stack([s.float(), torch.full_like(s.float(), float(self.r))], dim=1)

    # -- candidates -------------------------------------------------------------------------------------------------
    def q_values(self) -> torch.Tensor:
        first, count = int(self.options["q_first"]), int(self.options["q_count"])
        return torch.arange(first, first + count, dtype=self.param.dtype, device=self.param.device)

    def q_candidates(self, scale: torch.Tensor) -> torch.Tensor:
        """Every q of the list with the scales [G] -> [Q, G, 2]."""
        qs = self.q_values()
        return torch.stack([scale[None, :].expand(len(qs), -1), qs[:, None].expand(-1, len(scale))], dim=-1)

    def candidates(self, search) -> torch.Tensor:
        """For a flat (non-beam) search stage: every q with the current scale."""
        return self.q_candidates(self.param[:, 0])

    def scale_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s_lo, s_hi) per group: nearest-rank percentiles 0.9 and 1 of the strictly positive values, + shift."""
        values = self.layout.group_values(x.detach().float())
        lo, hi = [], []
        for row in values:
            pos, _ = torch.sort(row[row > 0])
            if pos.numel() == 0:
                pos = torch.ones(1, dtype=row.dtype, device=row.device)
            lo.append(nearest_rank(pos, 0.9))
            hi.append(nearest_rank(pos, 1.0))
        return torch.stack(lo) + self.shift, torch.stack(hi) + self.shift

    def start(self, x: torch.Tensor) -> None:
        """Section 3.5 (c, e): s = s_lo + 126/127 (s_hi - s_lo) (1 with fixed_scale), q = r."""
        if self.options["fixed_scale"]:
            s = torch.ones(self.layout.groups, dtype=self.param.dtype, device=self.param.device)
        else:
            lo, hi = self.scale_range(x)
            s = lo + 126.0 / 127.0 * (hi - lo)
        self.set_param(torch.stack([s, torch.full_like(s, float(self.r))], dim=1))

    def beam_plan(self, x: torch.Tensor) -> list[tuple]:
        """Section 3.4: fixed scale -> the q list (keep 1); else q list at the current s (keep q_beam), the
        scale_points x q grid (keep beam), then stages - 1 expansions (s + (k / (e - 1) - 1/2) delta_t, q),
        e = q_count / beam, delta_1 = (s_hi - s_lo) / (scale_points - 1), delta_{t+1} = delta_t / (e - 1/2)."""
        if self.options["fixed_scale"]:
            return [(lambda _surv: self.q_candidates(self.param[:, 0]), 1)]
        o = self.options
        lo, hi = self.scale_range(x)
        points = int(o["scale_points"])
        i = torch.arange(points, dtype=lo.dtype, device=lo.device)[:, None]
        s_grid = lo + i / (points - 1) * (hi - lo)                                         # [P, G]
        beam, q_beam, stages = int(o["beam"]), int(o["q_beam"]), int(o["stages"])
        e = max(1, int(o["q_count"]) // beam)

        def grid(surv: torch.Tensor) -> torch.Tensor:                                     # surv [Wq, G, 2]
            qs = surv[:, None, :, 1].expand(-1, points, -1)                                 # [Wq, P, G]
            ss = s_grid[None].expand(surv.shape[0], -1, -1)
            return torch.stack([ss, qs], dim=-1).reshape(-1, *surv.shape[1:])

        # official: delta_1 as the reference takes it, the difference of the first two grid scales (not the
        # quotient, which differs in the last bits), and its linspace fractions
        official = self.form == "official"
        delta = s_grid[1] - s_grid[0] if official else (hi - lo) / (points - 1)
        return [(lambda _surv: self.q_candidates(self.param[:, 0]), q_beam),
                (grid, beam if stages > 1 else 1),
                *refinements(delta, e, stages - 1, beam, linspace=official)]

    # -- state ------------------------------------------------------------------------------------------------
    def fold(self) -> float:
        """Stop subtracting the shift (the caller moves it into the next linear's bias); returns the shift."""
        beta = self._out_shift()
        self.folded.fill_(1.0)
        return beta

    def export(self) -> dict[str, torch.Tensor]:
        return {"param": self.param.detach().clone(), "scale": self.param[:, 0].detach().clone(),
                "q": self.param[:, 1].detach().clone(), "folded": self.folded.detach().clone(),
                "code_range": torch.tensor([0, self.top_code])}

    # -- reconstruction: the scale learns (straight-through rounding of the code); q stays fixed --------------------
    def fake_ste(self, x: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        s = self.layout.expand(param[..., 0], x.ndim)
        q = self.layout.expand(param[..., 1].detach(), x.ndim)
        xs = x + self.shift if self.shift else x
        u = (xs / s).clamp(FLOOR, 1.0)      # the floor keeps the gradient finite; paper zeros are masked below
        v = -torch.log2(u) * self.r / q
        c = v + (torch.round(v) - v).detach()
        keep = torch.round(v) <= self.top_code
        if self.form == "paper":
            keep = keep & (xs > 0)
        keep = keep.to(x.dtype)
        exact = torch.pow(2.0, -c.clamp(0, self.top_code) * q / self.r) * s * keep
        if self.form == "paper" and self.options["dequant"] == "lut":   # the table's value, the power's gradient
            exact = exact + (self._quantize(x, param.detach(), "lut") + self._out_shift() - exact).detach()
        return exact - self._out_shift() if self._out_shift() else exact


@register_quantizer("adalog_gelu")
class AdaLogGeluQuantizer(AdaLogQuantizer):
    """AdaLog after GELU (section 2.5): the shift beta = -min GELU by default, folded into fc2's bias by the
    recipe stage fold_shift. Its own name, so a slot can swap it for another method's post-GELU quantizer
    without restating options."""

    domain = "post_gelu"
    OPTIONS = {**AdaLogQuantizer.OPTIONS, "shift": GELU_SHIFT}


@register_quantizer("adalog_softmax")
class AdaLogSoftmaxQuantizer(AdaLogQuantizer):
    """AdaLog after softmax (section 2.4): s fixed at 1, only q searched (a plain argmax over the q list)."""

    domain = "probability"
    OPTIONS = {**AdaLogQuantizer.OPTIONS, "fixed_scale": True}
