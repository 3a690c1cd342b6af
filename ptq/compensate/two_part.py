"""ERQ's "two-part" weight quantizer (the released code's default for qkv / fc1; ptq/compensate/SPEC.md, ERQ):
a hidden granularity change made a declared option (`compensate.two_part`).

A linear weight W (m, d) is split by input column: the columns whose weights are most often outliers of their row
(`outlier_columns`) are quantized by a second quantizer of the layer's own kind and granularity (per output row for
RepQ-ViT's weights), the other columns by the layer's quantizer, each initialized on its own columns only. So every
row has two scales (and zero points), one for its outlier columns and one for the rest. The ERQ stage builds it when
it initializes the weight quantizer again on the ridge-updated weights (the released code chooses the columns at
that moment too), then quantizes the columns by halves as usual: each weight's floor / ceil is on its part's grid.

Not a registered quantizer (no slot may select it): it exists only after ERQ. Simulation only: a row with two scales
picked by column has no per-axis QuantizeLinear (export refuses it, naming the slot).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ptq.errors import PTQError
from ptq.quantizers.base import NotDeployable, Quantizer


def outlier_columns(w: torch.Tensor, percentile: float = 99.0, rows_per_column: int = 20) -> torch.Tensor:
    """The input columns of W (m, d) that get their own scales, ascending. Per row: its outliers are the weights
    above the `percentile` quantile of the row's positive weights or below the 100 - `percentile` quantile of its
    negative ones (linear interpolation, as numpy's percentile; a row without positive / negative weights has no
    outlier on that side). Each column's count is the number of rows where it is an outlier; the m //
    rows_per_column columns of highest count are chosen (at most d - 1, only columns counted at least once), ties
    broken by the first row where the column is an outlier, then by column index (the released code's
    Counter.most_common over rows in order, each row's columns ascending)."""
    w = w.detach()
    m, d = w.shape
    k = min(m // rows_per_column, d - 1)
    if k <= 0:
        return torch.zeros(0, dtype=torch.long, device=w.device)
    q, nan = percentile / 100.0, torch.tensor(float("nan"), dtype=w.dtype, device=w.device)
    # per row, the quantile of its positive (negative) weights alone: the others NaN, ignored; no such weight: NaN,
    # and a comparison with NaN is false (no outlier on that side)
    hi = torch.nanquantile(torch.where(w > 0, w, nan), q, dim=1, keepdim=True)
    lo = torch.nanquantile(torch.where(w < 0, w, nan), 1.0 - q, dim=1, keepdim=True)
    mask = (w > hi) | (w < lo)
    count = mask.sum(dim=0)
    first = torch.where(mask.any(dim=0), mask.to(torch.int8).argmax(dim=0), torch.full_like(count, m))
    order = torch.arange(d, device=w.device)
    order = order[torch.sort(first[order], stable=True).indices]          # then by first row (index order kept)
    order = order[torch.sort(-count[order], stable=True).indices]         # by count, highest first
    chosen = order[:k]
    return torch.sort(chosen[count[chosen] > 0]).values


class TwoPartQuantizer(Quantizer):
    """The layer's weight quantizer `outer` (the other columns) and a second one `inner` of the same kind, bits,
    granularity and options (the `columns`), applied by column (module docstring). Its `param` is the outer one's."""

    kind = "two_part"
    searched = False
    learnable_rounding = False   # reconstruction does not learn it (ERQ after reconstruction is refused anyway)

    def __init__(self, base: Quantizer, columns: torch.Tensor | None = None):
        nn.Module.__init__(self)   # not Quantizer.__init__: `param` is the outer quantizer's, not a buffer
        self.outer = base
        self.inner = type(base)(base.bits, base.layout, form=base.form, partner=base.partner, **base.options)
        self.bits, self.layout, self.form, self.partner = base.bits, base.layout, base.form, base.partner
        self.options = dict(base.options)
        if hasattr(base, "slot"):
            self.slot = base.slot
        cols = torch.zeros(0, dtype=torch.long) if columns is None else columns.detach().long().cpu()
        self.register_buffer("columns", cols.to(base.param.device))
        self.enabled = base.enabled
        self.initialized = False
        self.POSITIVE_KEYS = ("param", *(f"outer.{k}" for k in base.POSITIVE_KEYS),
                              *(f"inner.{k}" for k in self.inner.POSITIVE_KEYS))

    @property
    def param(self) -> torch.Tensor:
        return self.outer.param

    @property
    def rounding(self) -> torch.Tensor | None:
        """The outer part's hardened rounding (None: nearest), what ERQ checks to refuse running twice."""
        return getattr(self.outer, "rounding", None)

    def set_param(self, p: torch.Tensor) -> None:
        self.outer.set_param(p)

    def _index(self, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the inner columns, the outer columns) of a weight with d input columns."""
        rest = torch.ones(d, dtype=torch.bool, device=self.columns.device)
        rest[self.columns] = False
        return self.columns, rest.nonzero().squeeze(1)

    def parts(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the outer columns of w, the inner columns of w)."""
        cols, rest = self._index(w.shape[-1])
        return w[..., rest], w[..., cols]

    def _join(self, w: torch.Tensor, outer: Callable[[Quantizer, torch.Tensor], torch.Tensor],
              inner: Callable[[Quantizer, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """outer(self.outer, w's outer columns) and inner(self.inner, w's inner columns) put back in place (the outer
        result may carry a leading candidate dimension)."""
        cols, rest = self._index(w.shape[-1])
        a, b = outer(self.outer, w[..., rest]), inner(self.inner, w[..., cols])
        out = a.new_empty(*a.shape[:a.ndim - w.ndim], *w.shape)
        out[..., rest] = a
        out[..., cols] = b
        return out

    def fake(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The outer columns with params (the outer quantizer's, or candidates of them), the inner columns with the
        inner quantizer's own parameters."""
        return self._join(x, lambda q, v: q.fake(v, params), lambda q, v: q.fake(v, q.param))

    def floor_frac(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frac = self._join(w, lambda q, v: q.floor_frac(v)[0], lambda q, v: q.floor_frac(v)[0])
        up = self._join(w, lambda q, v: q.floor_frac(v)[1], lambda q, v: q.floor_frac(v)[1])
        return frac, up

    def soft_fake(self, w: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        cols, rest = self._index(w.shape[-1])
        return self._join(w, lambda q, v: q.soft_fake(v, up[..., rest]), lambda q, v: q.soft_fake(v, up[..., cols]))

    def harden(self, w: torch.Tensor, up: torch.Tensor) -> None:
        cols, rest = self._index(w.shape[-1])
        self.outer.harden(w[..., rest], up[..., rest])
        self.inner.harden(w[..., cols], up[..., cols])

    def integer_form(self):
        raise NotDeployable("two_part (ERQ's two-part weights: two scales per row, picked by input column) has no "
                            "per-axis QuantizeLinear (simulation only)")

    def export(self) -> dict[str, torch.Tensor]:
        state = {"param": self.outer.param.detach().clone(), "columns": self.columns.detach().clone()}
        for name, q in (("outer", self.outer), ("inner", self.inner)):
            state.update({f"{name}.{k}": v for k, v in q.export().items()})
        return state

    def restore(self, saved: dict[str, torch.Tensor]) -> None:
        for name, q in (("outer", self.outer), ("inner", self.inner)):
            part = {k[len(name) + 1:]: v for k, v in saved.items() if k.startswith(f"{name}.")}
            if "param" not in part:
                raise PTQError(f"saved two_part quantizer lacks '{name}.param'; valid: a file saved by this code")
            q.restore(part)
        self.columns = saved["columns"].round().long().to(self.columns.device)
        self.initialized = True

    def describe(self) -> dict:
        return {**self.outer.describe(), "kind": self.kind, "base": self.outer.kind}

    def extra_repr(self) -> str:
        return f"two_part of {self.outer.kind}, bits={self.bits}, columns={len(self.columns)}, enabled={self.enabled}"
