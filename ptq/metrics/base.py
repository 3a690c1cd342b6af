"""Layer-output metrics for the scale search: a registry keyed by name.

A metric scores candidate outputs against the float output of the same layer on the same inputs; higher is
better. Tensors arrive grouped as [C, S, G, T, F] (candidates, samples, scale groups, tokens, features) for the
candidates and [S, G, T, F] for the float output O and the squared gradient g2 (Hessian metric only).
Reduction (the reference's): mean over tokens and features, sum over samples -> [C, G]; the search takes the
argmax over C per group. A metric may overwrite `out_hat` (the search owns it), which saves memory traffic.

Adding a metric = one file in this folder with `@register_metric("name")` (imported automatically) + a YAML in
conf/metric/ (see README).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

MetricFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
METRICS: dict[str, MetricFn] = {}
NEEDS_GRAD: set[str] = set()


def register_metric(name: str, needs_grad: bool = False) -> Callable[[MetricFn], MetricFn]:
    def deco(fn: MetricFn) -> MetricFn:
        METRICS[name] = fn
        if needs_grad:
            NEEDS_GRAD.add(name)
        return fn

    return deco


def reduce_elementwise(score: torch.Tensor) -> torch.Tensor:
    """[C, S, G, T, F] per-element scores -> [C, G]: mean over T and F, sum over S."""
    return score.mean(dim=(-1, -2)).sum(dim=1)


def reduce_vectors(score: torch.Tensor) -> torch.Tensor:
    """[C, S, G, T] per-vector scores -> [C, G]: mean over T, sum over S."""
    return score.mean(dim=-1).sum(dim=1)


def get_metric(name: str) -> MetricFn:
    from ptq.errors import PTQError, choices

    if name not in METRICS:
        raise PTQError(f"unknown metric '{name}'; valid: {choices(METRICS)}")
    return METRICS[name]
