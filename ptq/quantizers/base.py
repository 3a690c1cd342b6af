"""Operand quantizers: a registry keyed by name and the base class every quantizer implements.

A quantizer fake-quantizes one operand (a weight, a layer input, a matmul operand). Its searched parameter is a
compact tensor `param` of shape [G] (one value per scale group) or [G, K] (K values per group searched together,
e.g. a scale and an integer zero point, or AdaLog's scale and log base). Everything the search needs is batched
over a leading candidate dimension: `fake(x, params[C, G(, K)])` returns [C, *x.shape], so C candidates cost one
tensor op.

A quantizer class declares what the machinery needs to know about it, so the core never tests its name:
`domain` (the values it expects), `searched` (whether the search stage tunes it), `PARTNER` (the other operand's
state while it is searched, per compat mode), `OPTIONS` (its own options and their defaults; a slot's
`options` may set only these) and what block reconstruction (ptq/recon/) may learn of it: `learnable_rounding`
(the rounding of each weight; implements `soft_fake` and `harden`) and `learnable_step` (its `param` by gradient
through the rounding; implements `fake_ste`). Quantizers without these stay fixed during reconstruction. Whether it
runs as a standard integer operator: `integer_op` (None: simulation only) and `integer_form()` (its codes' scale,
integer zero point and range, or NotDeployable saying why not; ptq/export/ reads it).

Adding a quantizer = one file in this folder with a `@register_quantizer("name")` class (it is imported
automatically) + a YAML in conf/quantizer/ that selects it for an operand (see README).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ptq.errors import PTQError, choices

QUANTIZERS: dict[str, type[Quantizer]] = {}


def register_quantizer(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.kind = name
        QUANTIZERS[name] = cls
        return cls

    return deco


class Layout:
    """Where the scale groups of a quantizer lie in its operand: `axis` (negative, counted from the last dimension;
    None = one group for the whole tensor), `size` entries along that axis, split into `groups` contiguous blocks
    (e.g. 3 for the q/k/v rows of qkv, H for heads, `size` for per-channel)."""

    def __init__(self, axis: int | None = None, size: int = 1, groups: int = 1):
        if axis is not None and (axis >= 0 or size % groups):
            raise ValueError(f"bad layout: axis {axis} must be negative and {size} entries must form {groups} groups")
        self.axis, self.size, self.groups = axis, size, (groups if axis is not None else 1)

    def expand(self, p: torch.Tensor, ndim: int) -> torch.Tensor:
        """[*lead, G] -> [*lead, *shape broadcastable against an operand of `ndim` dimensions]."""
        lead = p.shape[:-1]
        if self.axis is None:
            return p.reshape(*lead, *([1] * ndim))
        full = p.repeat_interleave(self.size // self.groups, dim=-1) if self.groups != self.size else p
        shape = [1] * ndim
        shape[self.axis] = self.size
        return full.reshape(*lead, *shape)

    def group_max(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor] = torch.abs) -> torch.Tensor:
        """Max of fn(x) within each group -> [G]."""
        v = fn(x.detach())
        if self.axis is None:
            return v.amax().reshape(1)
        return self.group_values(v).amax(dim=1)

    def group_values(self, x: torch.Tensor) -> torch.Tensor:
        """Every value of x, one row per group -> [G, values per group] (e.g. for percentiles of each group)."""
        if self.axis is None:
            return x.reshape(1, -1)
        return x.movedim(self.axis, 0).reshape(self.groups, -1)


@dataclass(frozen=True)
class IntegerForm:
    """How a quantizer maps to ONNX QuantizeLinear / DequantizeLinear (ptq/export/): codes
    clamp(round(x / scale) + zero_point, qmin, qmax) stored as int8 (qmin < 0) or uint8, per tensor (axis None) or per
    entry along `axis` (scale and zero_point [size], the groups repeated over their entries)."""

    scale: torch.Tensor
    zero_point: torch.Tensor        # integer-valued
    qmin: int
    qmax: int
    axis: int | None


class NotDeployable(Exception):
    """Why a quantizer has no integer operator (its message is the reason recorded in results.json)."""


class Quantizer(nn.Module):
    """Base class. Subclasses implement `fake`, `from_stat` (and `stat`) and `candidates`."""

    kind = "base"
    signed = True
    domain: ClassVar[str] = "real"             # real | nonnegative | probability ([0, 1]) | post_gelu (>= -0.17)
    searched: ClassVar[bool] = True            # False: initialization sets it; the search stage leaves it alone
    # the other operand of the op while this quantizer is searched: quantized (its current parameters) or float
    PARTNER: ClassVar[dict[str, str]] = {"paper": "quantized", "official": "quantized"}
    OPTIONS: ClassVar[dict[str, Any]] = {}     # the quantizer's own options and their defaults
    learnable_rounding: ClassVar[bool] = False  # reconstruction may learn each weight's rounding (AdaRound)
    learnable_step: ClassVar[bool] = False      # reconstruction may learn `param` by gradient (LSQ, STE rounding)
    # exported keys that are steps (scales, > 0): a saved file holding a zero, negative, NaN or Inf one is refused
    POSITIVE_KEYS: ClassVar[tuple[str, ...]] = ("param",)
    # the standard integer operator it maps to (implements `integer_form`); None: simulation only (ptq/export/)
    integer_op: ClassVar[str | None] = None

    def __init__(self, bits: int, layout: Layout, form: str = "paper", partner: str = "quantized", **options):
        super().__init__()
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise PTQError(f"unknown option '{unknown[0]}' of quantizer {self.kind}; valid: "
                           f"{choices(self.OPTIONS) or '(none)'}")
        self.bits = int(bits)
        self.layout = layout
        self.form = form
        self.partner = partner
        self.options = {**self.OPTIONS, **options}
        self.enabled = False
        self.register_buffer("param", torch.ones(layout.groups))
        self.initialized = False

    # -- the arithmetic -------------------------------------------------------------------------------------------
    def fake(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Quantize-dequantize x with params [G] (-> x.shape) or candidates [C, G] (-> [C, *x.shape])."""
        raise NotImplementedError

    def fake_chunks(self, x: torch.Tensor, params: torch.Tensor,
                    step: int) -> Iterator[tuple[slice | torch.Tensor, torch.Tensor]]:
        """Fake-quantize x under every candidate of params [C, ...], at most `step` candidates at a time: yields
        (which candidates: a slice or indices into C, their values [c, *x.shape]). The search's scorers go through
        this, so a quantizer may order the candidates or share work between them (AdaLog: -log2(x / s) once per
        distinct scale); the values must equal `fake`'s."""
        for c0 in range(0, params.shape[0], step):
            yield slice(c0, c0 + step), self.fake(x, params[c0:c0 + step])

    def stat(self, x: torch.Tensor) -> torch.Tensor | None:
        """Calibration statistic of x per group, combined over batches by max (default: max |x|)."""
        return self.layout.group_max(x)

    def from_stat(self, stat: torch.Tensor | None) -> torch.Tensor:
        """The initial parameter [G] (e.g. min-max scales) from the statistic over all calibration samples."""
        raise NotImplementedError

    def candidates(self, search) -> torch.Tensor:
        """Candidate parameters [C, G] for the search (search: ptq.quant.config.SearchConfig)."""
        raise NotImplementedError

    # -- state ------------------------------------------------------------------------------------------------
    def observe(self, x: torch.Tensor) -> None:
        s = self.stat(x)
        if s is not None:
            prev = getattr(self, "_stat", None)
            self._stat = s if prev is None else torch.maximum(prev, s)

    def init_from_stats(self) -> None:
        """Set (and remember as `initial`) the parameter from the observed statistic; forget the statistic."""
        p = self.from_stat(getattr(self, "_stat", None)).to(self.param)
        self.param.copy_(p)
        self.initial = p.clone()
        self._stat = None
        self.initialized = True

    def initialize(self, x: torch.Tensor) -> None:
        self._stat = None
        self.observe(x)
        self.init_from_stats()

    def set_param(self, p: torch.Tensor) -> None:
        self.param.copy_(p.to(self.param))
        if not hasattr(self, "initial"):
            self.initial = self.param.clone()
        self.initialized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if x.requires_grad and torch.is_grad_enabled():
            # straight-through estimator: round() has zero gradient, so the loss gradient of a quantized model
            # (metric.grad=kl_quant, reconstruction through fixed quantizers) would vanish; pass it through
            # unchanged instead (the fake values without recording their graph: only x + (out - x) is differentiated)
            with torch.no_grad():
                step = self.fake(x, self.param) - x
            return x + step
        return self.fake(x, self.param)

    def export(self) -> dict[str, torch.Tensor]:
        """Every calibrated value worth saving (scales, splits, code ranges); `restore` loads it back."""
        return {"param": self.param.detach().clone()}

    def restore(self, exported: dict[str, torch.Tensor]) -> None:
        """Load what `export()` returned: `param` and every other buffer of this quantizer it names (e.g. a zero
        point), so a quantizer with state beyond `param` round-trips through a saved file."""
        for name, buf in self.named_buffers(recurse=False):
            if name != "param" and name in exported:
                if exported[name].shape != buf.shape:
                    raise PTQError(f"saved {self.kind} {name} has shape {tuple(exported[name].shape)}; valid: "
                                   f"{tuple(buf.shape)}")
                buf.copy_(exported[name].to(buf))
        self.set_param(exported["param"])

    def max_values(self) -> int:
        """The most distinct values one scale group can take (2^bits for a b-bit code; a form whose zero is an
        extra level outside the codes says so by overriding this)."""
        return 2 ** self.bits

    def integer_form(self) -> IntegerForm:
        """Its current parameters as integer codes (only a quantizer that declares `integer_op`); raises
        NotDeployable naming why not."""
        raise NotDeployable(f"{self.kind} has no standard integer operator (simulation only)")

    def _affine_form(self, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> IntegerForm:
        """The IntegerForm of scale / zero point per group [G] with codes qmin..qmax: at most 8 bits, integer zero
        points."""
        if qmax - qmin > 255:
            raise NotDeployable(f"{self.kind} at {self.bits} bits has no 8-bit integer operator")
        if not torch.equal(zero_point, zero_point.round()):
            raise NotDeployable(f"{self.kind} has a fractional zero point")
        if bool(((zero_point < qmin) | (zero_point > qmax)).any()):   # e.g. a channel of weights of one sign
            raise NotDeployable(f"{self.kind} has a zero point outside its codes {qmin}..{qmax} (zero not on its "
                                f"grid; QuantizeLinear's zero point is a code)")
        lay = self.layout

        def expand(t: torch.Tensor) -> torch.Tensor:   # [G] -> one value per entry along the axis (or a scalar)
            t = t.detach().float().cpu()
            return t.repeat_interleave(lay.size // lay.groups) if lay.axis is not None else t.reshape(())

        return IntegerForm(expand(scale), expand(zero_point), qmin, qmax, lay.axis)

    # -- reconstruction (only quantizers that declare learnable_rounding / learnable_step) -------------------------
    def soft_fake(self, w: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """w quantized with floor(w / scale) + up, up in [0, 1] per element (soft or hard rounding decision)."""
        raise NotImplementedError(f"quantizer {self.kind} does not declare learnable_rounding")

    def soft_parts(self, w: torch.Tensor):
        """What soft_fake needs that stays fixed while the rounding is learned (ptq.quantizers.kernels.SoftParts:
        floor(w / scale), zero point, scale, code range), so reconstruction computes it once per unit and runs the
        fused kernel; a quantizer without it is reconstructed through soft_fake."""
        raise NotImplementedError(f"quantizer {self.kind} does not declare learnable_rounding")

    def floor_frac(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fraction of w / scale above its floor, and whether nearest rounding rounds up (0 / 1)."""
        raise NotImplementedError(f"quantizer {self.kind} does not declare learnable_rounding")

    def harden(self, w: torch.Tensor, up: torch.Tensor) -> None:
        """Keep the rounding decisions up (0 / 1 per element of w) as state: fake(w) = soft_fake(w, up) from now."""
        raise NotImplementedError(f"quantizer {self.kind} does not declare learnable_rounding")

    def clamp_step(self, param: torch.Tensor) -> torch.Tensor:
        """A learned `param` made valid: positive scales. Of a [G, K] parameter (a scale and e.g. a zero point or
        a log base) only the scale, column 0, is clamped; the other values are not learned."""
        if param.ndim == 1:
            return param.clamp(min=1e-8)
        return torch.cat([param[..., :1].clamp(min=1e-8), param[..., 1:]], dim=-1)

    def fake_ste(self, x: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """fake(x, param) differentiable in param (and x) with straight-through rounding (LSQ)."""
        raise NotImplementedError(f"quantizer {self.kind} does not declare learnable_step")

    def extra_repr(self) -> str:
        return f"{self.kind}, bits={self.bits}, groups={self.layout.groups}, form={self.form}, enabled={self.enabled}"

    def describe(self) -> dict[str, Any]:
        """What a saved parameter file records of this quantizer, checked when it is loaded again."""
        return {"kind": self.kind, "bits": self.bits, "form": self.form, "groups": self.layout.groups,
                "axis": self.layout.axis}


class KeepsRounding:
    """Mix-in for a quantizer that declares learnable_rounding: the learned rounding offsets (`rounding`, a buffer;
    None = nearest rounding) are exported with the parameters and restored from them."""

    def with_rounding(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.rounding is not None:
            state["rounding"] = self.rounding.detach().clone()
        return state

    def restore(self, saved: dict[str, torch.Tensor]) -> None:
        self.rounding = None
        super().restore(saved)   # param and the other buffers (e.g. a zero point)
        self.rounding = saved["rounding"].to(self.param) if "rounding" in saved else None


def qmax_signed(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def qmin_signed(bits: int) -> int:
    return -(2 ** (bits - 1))


def safe_scale(s: torch.Tensor) -> torch.Tensor:
    """Avoid a zero scale for an all-zero group (it would divide by zero)."""
    return torch.where(s > 0, s, torch.full_like(s, 1e-8))


def grid_candidates(delta0: torch.Tensor, search) -> torch.Tensor:
    """Spec section 5: Delta_i = (alpha + i (beta - alpha) / n) * Delta0 -> [C, G]."""
    mult = torch.tensor(search.grid(), dtype=delta0.dtype, device=delta0.device)
    return mult[:, None] * delta0[None, :]


def refinements(delta: torch.Tensor, e: int, count: int, beam: int, linspace: bool = False,
                floor: float | None = None) -> list[tuple]:
    """`count` beam-refinement stages of FPCS (SPEC-adalog.md 3.4) for a plan (ptq/quant/fpcs.py): each survivor
    [W, G, K] spawns e children whose scale (column 0) moves by (k / (e - 1) - 1/2) delta_t, k = 0..e-1, the other
    values unchanged; delta_1 = delta [G], delta_{t+1} = delta_t / (e - 1/2); keep `beam`, the last stage 1.
    `linspace`: the fractions k / (e - 1) as torch.linspace(0, 1, e) gives them (the reference's; some differ from
    the quotient in the last bit); `floor`: children's scales clamped to at least this (the reference's inputs)."""
    deltas = [delta]
    for _ in range(count - 1):
        deltas.append(deltas[-1] / (e - 0.5))
    if linspace:
        frac = torch.linspace(0, 1, e, dtype=delta.dtype, device=delta.device)
    else:
        frac = torch.arange(e, dtype=delta.dtype, device=delta.device) / max(e - 1, 1)
    offsets = frac - 0.5

    def expand(t: int):
        def make(surv: torch.Tensor) -> torch.Tensor:
            child = surv[:, None].repeat(1, e, 1, 1)                                  # [W, e, G, K]
            child[..., 0] += offsets[None, :, None] * deltas[t][None, None, :]
            if floor is not None:
                child[..., 0].clamp_(min=floor)
            return child.reshape(-1, *surv.shape[1:])
        return make

    return [(expand(t), beam if t < count - 1 else 1) for t in range(count)]


def log2_floor(x: torch.Tensor) -> torch.Tensor:
    """floor(log2(x)) robust to float error at exact powers of two."""
    e = torch.floor(torch.log2(x))
    return e + ((2.0 ** (e + 1)) <= x).to(x.dtype) - ((2.0 ** e) > x).to(x.dtype)


__all__ = ["QUANTIZERS", "register_quantizer", "Quantizer", "IntegerForm", "NotDeployable",
           "Layout", "KeepsRounding", "qmax_signed", "qmin_signed",
           "safe_scale", "grid_candidates", "refinements", "log2_floor", "math"]
