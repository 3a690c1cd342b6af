"""Compensators by name (`compensate.name`): each turns one block's fitted data into a side map (or none).

A compensator declares `compat` (the forms it has: a method without reference code has only `paper`), fits from
(x, y_fp, y_q) -- the block input on the quantized-and-compensated stream, the float and the quantized block
outputs on that same input, all tokens as rows (ptq/compensate/side.py saves and rebuilds the maps). A compensator
that `edits_weights` (ERQ, ptq/compensate/erq.py) adds no side path: the stage hands it the whole model
(`compensate_model`), and side.py saves the weights it replaced.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ptq.schema import CompensateConfig


@dataclass
class Fit:
    """One block's fit: the map to attach (None: nothing to add), its R^2 on the fitted rows, and its size."""

    side: nn.Module | None
    r2: float
    params: int           # parameters the map adds
    macs_per_token: int   # multiply-accumulates the map adds per token


class Compensator:
    name: str = ""
    compat: tuple[str, ...] = ("paper", "official")
    edits_weights: bool = False   # True: `compensate_model` runs instead of the per-block `fit`

    def fit(self, x: torch.Tensor, y_fp: torch.Tensor, y_q: torch.Tensor, cc: CompensateConfig) -> Fit:
        raise NotImplementedError

    def compensate_model(self, model: nn.Module, x_all: torch.Tensor, cc: CompensateConfig) -> dict:
        """(edits_weights only) compensate the whole model in place; returns the report's `compensation`."""
        raise NotImplementedError


COMPENSATORS: dict[str, Compensator] = {}


def register_compensator(name: str) -> Callable[[type[Compensator]], type[Compensator]]:
    def deco(cls: type[Compensator]) -> type[Compensator]:
        inst = cls()
        inst.name = name
        COMPENSATORS[name] = inst
        return cls

    return deco
