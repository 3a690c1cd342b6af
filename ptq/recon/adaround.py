"""AdaRound's pieces (Nagel et al. 2020), as pure functions: the rectified sigmoid, its inverse for the
initialization, the rounding regularizer and its annealing schedule (BRECQ's setting: linear decay of b after a
warm-up without the regularizer)."""
from __future__ import annotations

import math

import torch

ZETA, GAMMA = 1.1, -0.1   # stretch of the sigmoid to (-0.1, 1.1) before clipping to [0, 1]


def rectified_sigmoid(alpha: torch.Tensor) -> torch.Tensor:
    """h(alpha) = clamp(sigmoid(alpha) (zeta - gamma) + gamma, 0, 1): the soft rounding-up decision."""
    return torch.clamp(torch.sigmoid(alpha) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def init_alpha(frac: torch.Tensor, up: torch.Tensor, margin: float = 1e-6) -> torch.Tensor:
    """alpha with h(alpha) = frac (the soft start is the float weight), whose hard decision [alpha >= 0] is the
    nearest rounding `up`: where float error near frac = 0.5 would disagree with it, alpha is moved to +-margin,
    so that hardening without training reproduces the calibrated model exactly."""
    alpha = -torch.log((ZETA - GAMMA) / (frac - GAMMA) - 1.0)
    return torch.where(up > 0.5, alpha.clamp(min=0.0), alpha.clamp(max=-margin))


def hard_rounding(alpha: torch.Tensor) -> torch.Tensor:
    """The final decision: round up where alpha >= 0 (h >= 0.5)."""
    return (alpha >= 0).to(alpha.dtype)


def rounding_regularizer(h: torch.Tensor, b: float) -> torch.Tensor:
    """sum(1 - |2h - 1|^b): zero when every h is 0 or 1, pushes soft decisions to a side (sharper for small b)."""
    return (1.0 - (2.0 * h - 1.0).abs().pow(b)).sum()


def annealed_b(t: int, iters: int, warmup: float, b_start: float, b_end: float) -> float | None:
    """The regularizer's exponent at step t = 1..iters; None during warm-up (t < warmup * iters: no regularizer).
    Linear from b_start at the end of warm-up to b_end at the last step:
    b = b_end + (b_start - b_end) max(0, 1 - (t - w) / (iters - w)), w = warmup * iters."""
    w = warmup * iters
    if t < w:
        return None
    span = iters - w
    rel = (t - w) / span if span > 0 else 1.0
    return b_end + (b_start - b_end) * max(0.0, 1.0 - rel)


def cosine_lr(t: int, iters: int, lr: float) -> float:
    """Cosine annealing from lr at step 1 to 0 after the last step (the step sizes' schedule)."""
    return 0.5 * lr * (1.0 + math.cos(math.pi * (t - 1) / max(iters, 1)))
