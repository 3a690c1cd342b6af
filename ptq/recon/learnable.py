"""What a unit learns, as modules that stand in for its quantizers during optimization.

A weight quantizer that declares `learnable_rounding` becomes `LearnedRounding` (AdaRound variables alpha, one per
weight; the scale stays fixed); an activation quantizer that declares `learnable_step` becomes `LearnedStep` (its
step `param` an nn.Parameter, gradient through straight-through rounding). Every other activation quantizer stays
fixed (`FixedActivation`). With drop_prob > 0 (QDrop) each activation element is kept float with that probability.
`install` swaps them into the unit's ops; `Installed.finish` hardens and puts the quantizers back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ptq.quant.modules import QuantOp
from ptq.quantizers import Quantizer
from ptq.quantizers.kernels import SoftParts, soft_round
from ptq.recon.adaround import hard_rounding, init_alpha, rectified_sigmoid, rounding_regularizer


class LearnedRounding(nn.Module):
    """The weight soft-rounded by h(alpha) (ptq.quantizers.kernels.soft_round: floor(w / s) computed once). Set
    `b` before a forward that the regularizer of exponent b joins: the forward then computes it from the same
    sigmoid and `regularizer(b)` returns it (the same values and gradients as computing it separately)."""

    def __init__(self, q: Quantizer, weight: torch.Tensor):
        super().__init__()
        self.q = q
        frac, up = q.floor_frac(weight.detach())
        self.alpha = nn.Parameter(init_alpha(frac, up))
        try:
            self.parts: SoftParts | None = q.soft_parts(weight.detach())
        except NotImplementedError:      # a quantizer with soft_fake only: the plain expression every step
            self.parts = None
        self.b: float | None = None
        self._reg: torch.Tensor | None = None

    def h(self) -> torch.Tensor:
        return rectified_sigmoid(self.alpha)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.parts is None:
            return self.q.soft_fake(w, self.h())
        out, reg = soft_round(self.alpha, self.parts, self.b)
        self._reg = reg if self.b is not None else None
        return out

    def regularizer(self, b: float) -> torch.Tensor:
        reg, self._reg = self._reg, None
        if reg is None or b != self.b:     # no forward with this exponent since the last call
            return rounding_regularizer(self.h(), b)
        return reg

    def finish(self, weight: torch.Tensor) -> None:
        self.q.harden(weight, hard_rounding(self.alpha.detach()))


class _Activation(nn.Module):
    def __init__(self, q: Quantizer, drop_prob: float):
        super().__init__()
        self.q, self.drop_prob = q, drop_prob

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.quantize(x)
        if self.training and self.drop_prob > 0:
            keep_float = torch.rand_like(x) < self.drop_prob
            return torch.where(keep_float, x, xq)
        return xq

    def finish(self) -> None:
        pass


class FixedActivation(_Activation):
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x)   # straight-through gradient to the learnable parts before it


class LearnedStep(_Activation):
    def __init__(self, q: Quantizer, drop_prob: float):
        super().__init__(q, drop_prob)
        self.step = nn.Parameter(q.param.detach().clone())

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return self.q.fake_ste(x, self.q.clamp_step(self.step))

    def finish(self) -> None:
        self.q.set_param(self.q.clamp_step(self.step.detach()))


@dataclass
class Installed:
    """The stand-ins of one unit: (op, operand, original quantizer, stand-in)."""

    swaps: list[tuple[QuantOp, str, Quantizer, nn.Module]] = field(default_factory=list)

    def rounding(self) -> list[LearnedRounding]:
        return [m for *_, m in self.swaps if isinstance(m, LearnedRounding)]

    def steps(self) -> list[nn.Parameter]:
        return [m.step for *_, m in self.swaps if isinstance(m, LearnedStep)]

    def train(self, mode: bool) -> None:
        for *_, m in self.swaps:
            m.train(mode)

    def set_exponent(self, b: float | None) -> None:
        """The regularizer exponent of the next forward (None: no regularizer, e.g. during warm-up)."""
        for m in self.rounding():
            m.b = b

    def finish(self, harden: bool = True) -> None:
        """Harden the learned rounding, keep the learned steps, and put the original quantizers back."""
        for op, operand, q, m in self.swaps:
            if harden:
                m.finish(op.weight) if isinstance(m, LearnedRounding) else m.finish()
            setattr(op, f"{operand}_quantizer", q)
        self.swaps = []


def install(unit: nn.Module, learn_rounding: bool, learn_step: bool, drop_prob: float) -> Installed:
    """Swap the stand-ins into every quantized op of `unit` (only initialized quantizers; they run enabled)."""
    inst = Installed()
    for op in (m for m in unit.modules() if isinstance(m, QuantOp)):
        for operand, q in op.quantizers().items():
            if not q.initialized:
                continue
            q.enabled = True
            if operand == "weight":
                if learn_rounding and q.learnable_rounding:
                    inst.swaps.append((op, operand, q, LearnedRounding(q, op.weight)))
            elif learn_step and q.learnable_step:
                inst.swaps.append((op, operand, q, LearnedStep(q, drop_prob)))
            else:
                inst.swaps.append((op, operand, q, FixedActivation(q, drop_prob)))
    for op, operand, _, m in inst.swaps:
        setattr(op, f"{operand}_quantizer", m)
    return inst
