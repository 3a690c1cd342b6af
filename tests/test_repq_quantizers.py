"""RepQ-ViT's quantizers (SPEC-repq.md sections 2-3) against hand-computed values and independent formulas
(numpy quantiles in float64, brute-force loops over the percentile candidates)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptq.quantizers import QUANTIZERS, Layout
from ptq.quantizers import percentile as percentile_mod
from ptq.quantizers.uniform_asym import percentile_fit

P = (0.999, 0.9999, 0.99999)


def make(kind: str, bits: int, layout: Layout | None = None, form: str = "paper"):
    q = QUANTIZERS[kind](bits, layout or Layout(), form=form)
    q.enabled = True
    return q


def test_uniform_asym_hand_values():
    q = make("uniform_asym", 3)
    q.set_param(torch.tensor([0.5]))
    q.zero_point.fill_(3.0)
    x = torch.tensor([-2.0, -1.6, -0.3, 0.0, 0.26, 1.0, 2.2, 5.0])
    # x / 0.5 = [-4, -3.2, -0.6, 0, 0.52, 2, 4.4, 10] -> round [-4, -3, -1, 0, 1, 2, 4, 10] -> + 3, clamp to 0..7
    # = [0, 0, 2, 3, 4, 5, 7, 7] -> - 3, * 0.5
    assert torch.equal(q(x), torch.tensor([-1.5, -1.5, -0.5, 0.0, 0.5, 1.0, 2.0, 2.0]))


def brute_force_fit(v: np.ndarray, bits: int) -> tuple[float, float]:
    """SPEC-repq section 2 written as a plain loop in float64."""
    best, best_dz = 1e10, None
    for p in P:
        hi, lo = np.quantile(v, p), np.quantile(v, 1 - p)
        d = (hi - lo) / (2 ** bits - 1)
        z = np.round(-lo / d)
        xq = (np.clip(np.round(v / d) + z, 0, 2 ** bits - 1) - z) * d
        score = np.mean((v - xq) ** 2)
        if score < best:
            best, best_dz = score, (d, z)
    return best_dz


def test_uniform_asym_quantiles_of_an_arithmetic_sequence():
    """Values 0..100000: quantile(p) = p * 100000 exactly, so D and z follow by hand."""
    x = torch.arange(100001, dtype=torch.float32)
    for p in P:
        assert percentile_mod.quantile(x[None], p).item() == pytest.approx(p * 100000, rel=1e-6)
    q = make("uniform_asym", 8)
    q.initialize(x)
    # uniform values: the rounding noise D^2 / 12 dominates, so the narrowest pair (0.999: hi = 99900, lo = 100,
    # D = 99800 / 255 = 391.37, noise 12765 + clipping of the top 200 values ~27) beats the widest (0.99999:
    # D = 99998 / 255 = 392.15, noise 12815); z = round(-100 / 391.37) = 0
    assert q.param.item() == pytest.approx(99800 / 255, rel=1e-5)
    assert q.zero_point.item() == 0


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_uniform_asym_init_equals_brute_force(bits):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(40, 6, generator=g) * torch.tensor([0.1, 1, 3, 0.5, 2, 8]) + torch.tensor([0, 1, -2, 5, 0, 3])
    x[3, 2] = 60.0    # an outlier in channel 2
    q = make("uniform_asym", bits, Layout(-1, 6, 6))
    q.initialize(x)
    for c in range(6):
        d, z = brute_force_fit(x[:, c].double().numpy(), bits)
        assert q.param[c].item() == pytest.approx(d, rel=1e-5)
        assert q.zero_point[c].item() == z
    whole = make("uniform_asym", bits)
    whole.initialize(x)
    d, z = brute_force_fit(x.double().numpy().ravel(), bits)
    assert whole.param.item() == pytest.approx(d, rel=1e-5) and whole.zero_point.item() == z


def test_uniform_asym_observes_every_batch():
    """Percentiles are over all observed values, not a running max: two halves observed == the whole at once."""
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    a, b = make("uniform_asym", 4, Layout(-1, 5, 5)), make("uniform_asym", 4, Layout(-1, 5, 5))
    a.initialize(x)
    b.observe(x[:32])
    b.observe(x[32:])
    b.init_from_stats()
    assert torch.equal(a.param, b.param) and torch.equal(a.zero_point, b.zero_point)


def test_quantile_numpy_fallback_matches(monkeypatch):
    v = torch.randn(3, 5000, generator=torch.Generator().manual_seed(2))
    expected = percentile_fit(v, 4)

    def too_large(*args, **kwargs):
        raise RuntimeError("quantile() input tensor is too large")

    monkeypatch.setattr(percentile_mod.torch, "quantile", too_large)
    got = percentile_fit(v, 4)
    # torch.quantile computes the position p (n - 1) in float32, numpy in float64: equal to float32 round-off
    assert torch.allclose(got[0], expected[0], rtol=1e-4) and torch.equal(got[1], expected[1])


def test_uniform_asym_to_per_tensor_changes_layout():
    q = make("uniform_asym", 4, Layout(-1, 3, 3))
    q.initialize(torch.randn(10, 3))
    assert q.describe()["groups"] == 3 and q.describe()["axis"] == -1
    q.to_per_tensor(torch.tensor(0.5), torch.tensor(2.5))
    assert q.describe()["groups"] == 1 and q.describe()["axis"] is None
    assert q.param.shape == (1,) and q.zero_point.shape == (1,)
    # fractional z* as the spec keeps it: round(x / 0.5) + 2.5, clamped to 0..15, - 2.5, * 0.5
    x = torch.tensor([[-2.0, 0.3, 9.0]])
    assert torch.allclose(q(x), torch.tensor([[-1.25, 0.5, 6.25]]))
    fresh = make("uniform_asym", 4)
    fresh.restore(q.export())
    assert torch.equal(fresh(x), q(x))


@pytest.mark.parametrize("form", ["official", "paper"])
def test_log_sqrt2_levels_reproduced_exactly(form):
    bits, d = 3, 0.8
    q = make("log_sqrt2", bits, form=form)
    q.set_param(torch.tensor([d]))
    top = 2 ** bits - 1 if form == "official" else 2 ** bits - 2
    levels = torch.tensor([d * 2 ** (-k / 2) for k in range(top + 1)])
    assert torch.allclose(q(levels), levels, rtol=1e-6, atol=0)
    # above D saturates to D; zero stays zero; the code past the top becomes zero
    beyond = torch.tensor([1.7, 0.0, d * 2 ** (-(top + 1) / 2)])
    assert torch.allclose(q(beyond), torch.tensor([d, 0.0, 0.0]))


def test_log_sqrt2_hand_values():
    q = make("log_sqrt2", 3, form="official")
    q.set_param(torch.tensor([1.0]))
    # -2 log2(0.3) = 3.47 -> c = 3 -> 2^-1.5; -2 log2(0.01) = 13.3 -> c >= 8 -> 0; -2 log2(0.09) = 6.95 -> 7
    x = torch.tensor([0.3, 0.01, 0.09])
    assert torch.allclose(q(x), torch.tensor([2 ** -1.5, 0.0, 2 ** -3.5]))
    paper = make("log_sqrt2", 3, form="paper")   # code 7 is zero in the paper form
    paper.set_param(torch.tensor([1.0]))
    assert torch.allclose(paper(x), torch.tensor([2 ** -1.5, 0.0, 0.0]))


def test_log_sqrt2_init_equals_brute_force():
    x = torch.randn(4, 3, 20, 20, generator=torch.Generator().manual_seed(5)).mul(3).softmax(-1)
    q = make("log_sqrt2", 4, form="official")
    q.initialize(x)
    v = x.double().numpy().ravel()
    best, best_d = 1e10, None
    for p in P:
        d = np.quantile(v, p)
        c = np.round(-2 * np.log2(v / d))
        xq = np.where(c >= 16, 0.0, d * 2.0 ** (-np.clip(c, 0, 15) / 2))
        score = np.mean((v - xq) ** 2)
        if score < best:
            best, best_d = score, d
    assert q.param.item() == pytest.approx(best_d, rel=1e-5)
    assert math.isfinite(q.param.item())
