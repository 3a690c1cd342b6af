"""Percentile initialization shared by the calibration-only quantizers of RepQ-ViT (SPEC-repq.md sections 2-3).

Such a quantizer is initialized from *every* value it observed (a percentile is not a running max), scoring a few
percentile-derived candidates by the mean squared error over all of a group's values. This module holds the
quantile definition (torch.quantile's linear interpolation; numpy's identical `linear` method for tensors too
large for torch.quantile) and the mix-in that keeps the observed values instead of a max statistic.
"""
from __future__ import annotations

import numpy as np
import torch

PERCENTILES = (0.999, 0.9999, 0.99999)   # the candidates of SPEC-repq sections 2 and 3, tried in this order
NO_SCORE = 1e10                           # the starting "best" score (a candidate must score below it)


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of each row of `values` [G, n] -> [G], linear interpolation between order statistics.
    torch.quantile refuses inputs of more than 2^24 elements; numpy's percentile (same definition) takes those."""
    try:
        return torch.quantile(values, q, dim=1)
    except RuntimeError:
        out = np.quantile(values.detach().cpu().numpy(), q, axis=1, method="linear")
        return torch.as_tensor(out, dtype=values.dtype, device=values.device)


class KeepsValues:
    """Mix-in for a `Quantizer`: `observe` keeps every value per group ([G, n], concatenated over batches), so
    `from_stat` receives all of them."""

    def observe(self, x: torch.Tensor) -> None:
        v = self.layout.group_values(x.detach())
        prev = getattr(self, "_stat", None)
        self._stat = v if prev is None else torch.cat([prev, v], dim=1)
