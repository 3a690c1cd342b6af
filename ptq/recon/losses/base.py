"""The reconstruction-loss registry: a loss = what it captures at the unit output + the criterion built from it.

`capture(ctx)` runs with every quantizer off (the float model) over the reconstruction images and returns the
unit's inputs, its float output and the loss's statistics; `criterion(stats, rc)` returns the function
(out, target, idx) -> scalar the optimization minimizes, idx being the rows of the batch in the captured images.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ptq.errors import PTQError, choices
from ptq.recon.capture import capture_unit

Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
NEEDS = ("nothing", "squared_gradients", "gradient_samples", "hessian_diagonal", "refreshed_gradients")


@dataclass
class CaptureContext:
    """Everything a loss's capture pass may read: the float model, the unit, the images and the shared generator."""

    model: nn.Module
    unit: nn.Module
    x: torch.Tensor
    batch_size: int
    generator: torch.Generator
    rc: object               # ptq.schema.ReconConfig
    fisher_draws: int        # metric.fisher_draws: labels sampled per image for Fisher gradients


@dataclass(frozen=True)
class ReconLoss:
    name: str
    needs: str   # one of NEEDS, for the record and the docs
    capture: Callable[[CaptureContext], tuple[list[torch.Tensor], torch.Tensor, object]]
    criterion: Callable[[object, object], Criterion]
    reads: tuple[str, ...] = ()   # the recon.loss_* keys and metric.fisher_draws it reads (ptq/sweep.py drops others)


LOSS_KEYS = ("loss_rank", "loss_draws", "loss_direction", "loss_eps", "loss_temp")


RECON_LOSSES: dict[str, ReconLoss] = {}


def register_recon_loss(name: str, needs: str, capture, criterion, reads: tuple[str, ...] = ()) -> ReconLoss:
    """Register a loss under `name` (a file in this folder calls this at import; see the module docstring)."""
    if needs not in NEEDS:
        raise ValueError(f"unknown needs={needs}; valid: {', '.join(NEEDS)}")
    RECON_LOSSES[name] = ReconLoss(name, needs, capture, criterion, reads)
    return RECON_LOSSES[name]


def get_recon_loss(name: str) -> ReconLoss:
    if name not in RECON_LOSSES:
        raise PTQError(f"unknown recon.loss={name}; valid: {choices(RECON_LOSSES)}")
    return RECON_LOSSES[name]


def reads(name: str, key: str) -> bool:
    """Whether loss `name` reads `key` (unknown losses: assumed to read everything; validation refuses them)."""
    return name not in RECON_LOSSES or key in RECON_LOSSES[name].reads


def squared_error(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, scale: float) -> torch.Tensor:
    """rec_scale * mean over all dims but 1 of the sum over dim 1 of the (weighted) squared error."""
    err = (out - target).square()
    if weight is not None:
        err = err * weight
    return scale * err.sum(1).mean()


def float_capture(ctx: CaptureContext, fisher_draws: int = 0):
    """The unit's inputs and float output (and BRECQ's g^2 weight when fisher_draws > 0): the stage's capture."""
    return capture_unit(ctx.model, ctx.unit, ctx.x, ctx.batch_size, fisher_draws, ctx.generator)


def normalized(t: torch.Tensor) -> torch.Tensor:
    """t / mean(t) (mean 1: the loss keeps the MSE's scale, so rec_scale and reg_lambda mean the same)."""
    return t / t.mean().clamp(min=1e-30)
