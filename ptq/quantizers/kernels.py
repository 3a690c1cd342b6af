"""Fused fake-quantize kernels for block reconstruction: custom autograd Functions with a hand-written backward.

Why: reconstruction runs thousands of forward + backward steps through every quantizer of a unit; written as
plain tensor expressions, each quantizer call records 6-10 autograd nodes, keeps their inputs alive and recomputes
in the backward what the forward already had (x / s, the clamp masks, the sigmoid). These Functions compute the
same values with the same floating-point operations in the same order -- the gradients are bit-identical to what
autograd computes for the plain expressions (tests/test_recon_kernels.py checks it against them) -- with one node,
the masks and quotients saved from the forward, and the reductions of a negated term done on the reduced value.

- `ste_fake`: LSQ fake quantization of an activation with a learned step (straight-through rounding):
  ((clamp(round(x / s) [+ z], lo, hi) [- z]) s, differentiable in x and s (z fixed).
- `soft_round`: AdaRound's soft-rounded weight ((clamp(floor(w / s) + h(alpha) [+ z], lo, hi) [- z]) s with
  h = clamp(sigmoid(alpha) (zeta - gamma) + gamma, 0, 1), floor(w / s) precomputed once per unit (w and s are
  fixed while the rounding is learned), together with the rounding regularizer sum(1 - |2h - 1|^b) from the same
  sigmoid.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

ZETA, GAMMA = 1.1, -0.1   # AdaRound's stretch of the sigmoid to (-0.1, 1.1) before clipping to [0, 1]


class SoftParts(NamedTuple):
    """What a weight quantizer's soft rounding needs, fixed while the rounding is learned: floor(w / s) per weight,
    the zero point (None: symmetric), the scale broadcast against w, and the code range [lo, hi]."""

    floor: torch.Tensor
    zero: torch.Tensor | None
    scale: torch.Tensor
    lo: float
    hi: float


def soft_apply(parts: SoftParts, up: torch.Tensor) -> torch.Tensor:
    """The weight with codes floor(w / s) + up (up in [0, 1] per weight), plain tensor arithmetic."""
    codes = parts.floor + up
    if parts.zero is None:
        return codes.clamp(parts.lo, parts.hi) * parts.scale
    codes = codes + parts.zero
    return (codes.clamp(parts.lo, parts.hi) - parts.zero) * parts.scale


def _clamp_keeps_bounds() -> bool:
    """Whether autograd's clamp(x, lo, hi) passes the gradient at x == lo and x == hi (this torch: no; the kernels
    follow whatever autograd does, so their gradients stay those of the plain expressions)."""
    x = torch.tensor([0.0, 1.0], requires_grad=True)
    x.clamp(0.0, 1.0).sum().backward()
    return bool(x.grad.eq(1.0).all())


KEEPS_BOUNDS = _clamp_keeps_bounds()


def _inside(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Where clamp(t, lo, hi) passes the gradient."""
    if KEEPS_BOUNDS:
        return (t >= lo).logical_and_(t <= hi)
    return (t > lo).logical_and_(t < hi)


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The reduction autograd applies to the gradient of a broadcast operand (at::sum_to)."""
    return t.sum_to_size(shape) if t.shape != shape else t


class _SteFake(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero, lo, hi):
        v = torch.div(x, scale)
        codes = torch.round(v)
        if zero is not None:
            codes = codes.add_(zero)
        kept = _inside(codes, lo, hi)
        clamped = codes.clamp_(lo, hi)
        out = clamped - zero if zero is not None else clamped
        ctx.save_for_backward(v, out, kept, scale)
        return out * scale

    @staticmethod
    def backward(ctx, g):
        v, codes, kept, scale = ctx.saved_tensors
        g_scale = _sum_to(g * codes, scale.shape)                 # d(codes s)/ds
        # through the clamp, straight through the round; torch.where as autograd's clamp backward, so that g_v has
        # its memory layout (the mask's: x's) and the reductions below sum in the same order
        g_v = torch.where(kept, g * scale, 0.0)
        # d(x / s)/ds = -(x / s) / s: the negation is taken of the reduced term (the sum of negated values is the
        # negated sum, bit for bit)
        g_scale = g_scale + -_sum_to(g_v * v.div_(scale), scale.shape)
        return g_v.div_(scale), g_scale, None, None, None


def ste_fake(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, lo: float, hi: float) -> torch.Tensor:
    """((clamp(round(x / s) [+ z], lo, hi) [- z]) s, differentiable in x and s through straight-through rounding;
    the same values and gradients as that expression with `v + (round(v) - v).detach()` for round(v)."""
    return _SteFake.apply(x, scale, zero, lo, hi)


class _SoftRound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, alpha, floor, zero, scale, lo, hi, b):
        sig = torch.sigmoid(alpha)
        pre = sig * (ZETA - GAMMA) + GAMMA
        h_kept = _inside(pre, 0.0, 1.0)
        h = pre.clamp_(0.0, 1.0)
        codes = floor + h
        if zero is not None:
            codes = codes.add_(zero)
        in_range = _inside(codes, lo, hi)
        w = codes.clamp_(lo, hi)
        if zero is not None:
            w = w.sub_(zero)
        w = w.mul_(scale)
        ctx.b = b
        if b is None:
            ctx.save_for_backward(sig, h_kept, in_range, scale)
            return w, torch.zeros((), dtype=w.dtype, device=w.device)
        t = 2.0 * h - 1.0
        a = t.abs()
        reg = (1.0 - a.pow(b)).sum()
        ctx.save_for_backward(sig, h_kept, in_range, scale, t, a)
        return w, reg

    @staticmethod
    def backward(ctx, g_w, g_reg):
        sig, h_kept, in_range, scale, *reg_saved = ctx.saved_tensors

        def through_h(g_h: torch.Tensor) -> torch.Tensor:       # h = clamp(sigmoid(alpha) 1.2 - 0.1, 0, 1)
            g_pre = torch.where(h_kept, g_h, 0.0) * (ZETA - GAMMA)
            return torch.ops.aten.sigmoid_backward(g_pre, sig)

        g_alpha = through_h(torch.where(in_range, g_w * scale, 0.0))
        if ctx.b is not None and g_reg is not None:
            t, a = reg_saved
            b = ctx.b
            g_a = (-g_reg).expand(a.shape) * (b * a.pow(b - 1)) if b != 0 else torch.zeros_like(a)
            g_alpha = g_alpha + through_h((g_a * t.sgn()) * 2.0)
        return g_alpha, None, None, None, None, None, None


def soft_round(alpha: torch.Tensor, parts: SoftParts, b: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the soft-rounded weight, the regularizer sum(1 - |2h - 1|^b); 0 when b is None), differentiable in alpha:
    the values and the gradient of soft_apply(parts, rectified_sigmoid(alpha)) and rounding_regularizer(
    rectified_sigmoid(alpha), b) written plainly."""
    return _SoftRound.apply(alpha, parts.floor, parts.zero, parts.scale, parts.lo, parts.hi, b)
