"""Every metric against a separate NumPy formula (spec section 4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptq.metrics import METRICS


def _np_cos(a, b):
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-8)


NUMPY = {
    "mse": lambda oh, o, g2: -((o - oh) ** 2).mean(axis=(-1, -2)).sum(1),
    "l1": lambda oh, o, g2: -np.abs(o - oh).mean(axis=(-1, -2)).sum(1),
    "cosine": lambda oh, o, g2: _np_cos(oh, np.broadcast_to(o, oh.shape)).mean(-1).sum(1),
    "pearson": lambda oh, o, g2: _np_cos(oh - oh.mean(-1, keepdims=True),
                                         np.broadcast_to(o - o.mean(-1, keepdims=True), oh.shape)).mean(-1).sum(1),
    "hessian": lambda oh, o, g2: -(g2 * (o - oh) ** 2).mean(axis=(-1, -2)).sum(1),
    "linear_weighted_l2": lambda oh, o, g2: -(np.abs(o) * (o - oh) ** 2).mean(axis=(-1, -2)).sum(1),
    "square_weighted_l2": lambda oh, o, g2: -((o * (o - oh)) ** 2).mean(axis=(-1, -2)).sum(1),
}


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_metric_matches_numpy(name):
    rng = np.random.default_rng(0)
    c, s, g, t, f = 5, 3, 2, 4, 6
    o = rng.normal(size=(s, g, t, f))
    oh = o + rng.normal(scale=0.3, size=(c, s, g, t, f))
    g2 = rng.random(size=(s, g, t, f))
    got = METRICS[name](torch.from_numpy(oh.copy()), torch.from_numpy(o), torch.from_numpy(g2)).numpy()
    assert got.shape == (c, g)
    assert np.allclose(got, NUMPY[name](oh, o, g2), rtol=1e-10, atol=1e-12)


def test_all_registered_metrics_are_tested():
    assert set(METRICS) == set(NUMPY)


def test_perfect_candidate_scores_best():
    o = torch.randn(2, 1, 3, 8, dtype=torch.float64)
    oh = torch.stack([o * 1.3, o.clone(), o + 0.1])
    g2 = torch.rand_like(o) + 0.1
    for name, fn in METRICS.items():
        if name in ("cosine", "pearson"):
            continue  # scale-invariant: 1.3 O is as good as O
        assert fn(oh.clone(), o, g2).argmax(0).item() == 1, name
