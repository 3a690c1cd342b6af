"""Gradients of a loss of the logits with respect to a unit's output, per image, optionally at a shifted output.

The float model runs batch by batch; a forward hook replaces the unit's output O by a leaf O (+ a perturbation)
so that torch.autograd.grad gives dL/dO alone (no parameter gradients). Losses are summed over the batch, so each
image's gradient is its own."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# (logits, first row of the batch) -> the scalar losses whose gradients are wanted (one per draw)
LossesOfLogits = Callable[[torch.Tensor, int], list[torch.Tensor]]


@torch.no_grad()
def float_logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def output_gradients(model: nn.Module, unit: nn.Module, x: torch.Tensor, batch_size: int,
                     losses: LossesOfLogits, shift: torch.Tensor | None = None) -> torch.Tensor:
    """[draws, len(x), *unit output shape]: dL_k/dO for each loss k that `losses` returns, O shifted by `shift`
    (same shape as the unit's output over x) where given."""
    leaf: list[torch.Tensor] = []
    start = [0]

    def hook(mod, args, out):
        o = out.detach().requires_grad_(True)
        leaf.append(o)
        if shift is not None:
            return o + shift[start[0]:start[0] + len(o)].to(o.dtype)
        return o

    handle = unit.register_forward_hook(hook)
    grads: list[torch.Tensor] = []
    try:
        for i in range(0, len(x), batch_size):
            start[0] = i
            leaf.clear()
            with torch.enable_grad():
                ls = losses(model(x[i:i + batch_size]), i)
                grads.append(torch.stack([torch.autograd.grad(one, leaf[0], retain_graph=k < len(ls) - 1)[0]
                                          for k, one in enumerate(ls)]))
    finally:
        handle.remove()
    return torch.cat(grads, 1)


def kl_to(fp_logits: torch.Tensor, temperature: float) -> LossesOfLogits:
    """KL(softmax(fp / T) || softmax(logits / T)) summed over the batch (the distillation loss of both papers)."""
    def losses(logits: torch.Tensor, i: int) -> list[torch.Tensor]:
        logp = F.log_softmax(fp_logits[i:i + len(logits)] / temperature, -1)
        return [(logp.exp() * (logp - F.log_softmax(logits / temperature, -1))).sum()]
    return losses


def sampled_ce(fp_logits: torch.Tensor, draws: int, generator: torch.Generator) -> LossesOfLogits:
    """Cross-entropy against labels drawn from the float softmax, `draws` of them (the true Fisher's samples)."""
    def losses(logits: torch.Tensor, i: int) -> list[torch.Tensor]:
        probs = F.softmax(fp_logits[i:i + len(logits)].double(), -1)
        ys = [torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)
              for _ in range(draws)]
        return [F.cross_entropy(logits, y, reduction="sum") for y in ys]
    return losses
