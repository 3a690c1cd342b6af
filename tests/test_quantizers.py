"""Quantizers against hand-computed values and independent formulas (spec sections 2-3)."""
from __future__ import annotations

import math

import pytest
import torch

from ptq.quant.config import SearchConfig
from ptq.quantizers import QUANTIZERS, Layout
from ptq.quantizers.twin_gelu import GELU_MIN


def q(kind: str, bits: int, layout: Layout | None = None, form: str = "paper"):
    return QUANTIZERS[kind](bits, layout or Layout(), form=form)


def test_registry_names():
    assert {"uniform", "twin_softmax", "twin_gelu"} <= set(QUANTIZERS)


def test_uniform_hand_values():
    x = torch.tensor([-5.0, -4.1, -0.25, 0.25, 0.75, 1.26, 3.4, 10.0])
    # codes round-half-even(x / 0.5) = [-10, -8, -0, 0, 2, 3, 7, 20], clamped to [-8, 7]
    expected = torch.tensor([-4.0, -4.0, 0.0, 0.0, 1.0, 1.5, 3.5, 3.5])
    assert torch.equal(q("uniform", 4).fake(x, torch.tensor([0.5])), expected)


def test_uniform_initial_scale_is_minmax():
    uq = q("uniform", 4)
    uq.initialize(torch.tensor([[1.0, -10.0], [3.0, 2.0]]))
    assert uq.param.item() == pytest.approx(10.0 / 7.5)


def test_uniform_per_block_and_per_channel_scales():
    w = torch.tensor([[1.0, -1.0], [0.5, 0.2], [4.0, 1.0], [-2.0, 0.1], [0.1, 0.1], [0.3, -0.05]])
    blocks = q("uniform", 8, Layout(-2, 6, 3))
    blocks.initialize(w)
    assert torch.allclose(blocks.param, torch.tensor([1.0, 4.0, 0.3]) / 127.5)
    chan = q("uniform", 8, Layout(-2, 6, 6))
    chan.initialize(w)
    assert torch.allclose(chan.param, w.abs().amax(1) / 127.5)
    # each row is quantized with its block's scale
    out = blocks.fake(w, blocks.param)
    for row in range(6):
        s = blocks.param[row // 2]
        ref = torch.clamp(torch.round(w[row] / s), -128, 127) * s
        assert torch.equal(out[row], ref)


def test_per_head_layout_on_windows():
    # [S, windows, H, N, D] and [B*, H, N, D] both take one scale per head (axis -3)
    x = torch.randn(2, 3, 4, 5, 6)
    hq = q("uniform", 6, Layout(-3, 4, 4))
    hq.initialize(x)
    assert torch.allclose(hq.param, x.abs().amax(dim=(0, 1, 3, 4)) / 31.5)
    assert hq.fake(x.reshape(6, 4, 5, 6), hq.param).reshape(x.shape).equal(hq.fake(x, hq.param))


def test_batched_candidates_equal_one_by_one():
    x = torch.randn(4, 7)
    for kind in ("uniform", "twin_gelu"):
        quant = q(kind, 6)
        quant.initialize(x)
        cands = quant.candidates(SearchConfig(alpha=0.5, beta=1.2, n=5, include_beta=True))
        batched = quant.fake(x, cands)
        for i in range(cands.shape[0]):
            assert torch.equal(batched[i], quant.fake(x, cands[i])), kind


def test_candidate_grid_inclusive_and_reference():
    paper = SearchConfig(alpha=0.5, beta=1.2, n=100, include_beta=True).grid()
    ref = SearchConfig(alpha=0.5, beta=1.2, n=100, include_beta=False).grid()
    assert len(paper) == 101 and paper[-1] == pytest.approx(1.2)
    assert len(ref) == 100 and ref[0] == 0.5 and ref[-1] == pytest.approx(0.5 + 99 * 0.7 / 100)
    assert max(ref) < 1.2


def test_twin_softmax_official_spec_example():
    ts = q("twin_softmax", 8, form="official")
    out = ts.fake(torch.tensor([0.5, 1.0]), torch.tensor([8.0]))
    assert out[0].item() == pytest.approx(0.507843, abs=1e-6)
    assert out[1].item() == pytest.approx(1.003906, abs=1e-6)


def test_twin_softmax_paper_exact():
    ts = q("twin_softmax", 8, form="paper")
    d_large, d_small = 1 / 127, 1 / (127 * 256)
    x = torch.tensor([0.001, 0.5, 127.4 * d_small, 127.6 * d_small, 1.0, 0.0], dtype=torch.float64)
    out = ts.fake(x, torch.tensor([8.0], dtype=torch.float64))
    expected = [33 * d_small,            # round(32.512) = 33 <= 127: small range
                64 * d_large,            # round(63.5) = 64 (half to even): large range
                127 * d_small,           # top code of the small range
                0.0,                     # code 128 does not fit: large range, round(0.498) = 0
                1.0, 0.0]
    assert out.tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("form", ["paper", "official"])
@pytest.mark.parametrize("bits,m", [(8, 4), (6, 3), (4, 1)])
def test_twin_softmax_code_ranges_and_power_of_two(form, bits, m):
    ts = q("twin_softmax", bits, form=form)
    d_large, d_small = ts.scales(torch.tensor([float(m)], dtype=torch.float64))
    assert d_large.item() / d_small.item() == pytest.approx(2.0 ** m)
    assert d_large.item() == pytest.approx(1 / (2 ** (bits - 1) - 1))
    x = torch.rand(2000, dtype=torch.float64) ** 3
    out = ts.fake(x, torch.tensor([float(m)], dtype=torch.float64))
    n = 2 ** (bits - 1) - 1
    if form == "paper":
        small = torch.round(out / d_small.double())
        large = torch.round(out / d_large.double())
        on_small = (small * d_small.double() - out).abs() < 1e-12
        on_large = (large * d_large.double() - out).abs() < 1e-12
        assert (on_small & (small <= n) | on_large & (large <= n)).all()
    else:  # official: Q_L(clamp(x, s, 1)) + Q_S(clamp(x, 0, s)), computed independently
        s = 2.0 ** -m
        ql = torch.clamp(torch.round(x.clamp(s, 1) / d_large.double()), 0, n) * d_large.double()
        qs = torch.clamp(torch.round(x.clamp(0, s) / d_small.double()), 0, n) * d_small.double()
        assert torch.allclose(out, ql + qs, atol=1e-12)


def test_twin_gelu_official_hand_values():
    tg = q("twin_gelu", 6, form="official")
    d_neg = GELU_MIN / 32
    x = torch.tensor([-0.17, -0.05, 0.0, 0.26, 5.0], dtype=torch.float64)
    out = tg.fake(x, torch.tensor([0.1], dtype=torch.float64))
    # negative codes round(x / d_neg) in [-32, 0]: -32.005 -> -32, -9.41 -> -9; positive codes in [0, 31]
    assert out.tolist() == pytest.approx([-32 * d_neg, -9 * d_neg, 0.0, 0.3, 3.1], abs=1e-12)


def test_twin_gelu_paper_power_of_two_relation():
    tg = q("twin_gelu", 6, form="paper")
    # m = floor(log2(0.1 * 32 / 0.16997)) = floor(log2(18.83)) = 4 -> D_neg = 0.1 / 16
    assert tg.neg_scale(torch.tensor([0.1])).item() == pytest.approx(0.1 / 16)
    for d_pos in torch.logspace(-4, 0, 37, dtype=torch.float64):
        d_neg = tg.neg_scale(d_pos.reshape(1)).item()
        m = math.log2(d_pos.item() / d_neg)
        assert m == pytest.approx(round(m), abs=1e-9)               # D_pos = 2^m D_neg, m an integer
        assert 32 * d_neg >= GELU_MIN * (1 - 1e-12)                  # the negative range covers -0.16997
        assert 32 * d_neg / 2 < GELU_MIN                             # and m is the largest that does


def test_twin_gelu_ranges():
    tg = q("twin_gelu", 4, form="official")
    x = torch.linspace(-0.17, 3, 500, dtype=torch.float64)
    out = tg.fake(x, torch.tensor([0.2], dtype=torch.float64))
    assert out.max().item() == pytest.approx(7 * 0.2)
    assert out.min().item() >= -8 * GELU_MIN / 8 - 1e-12
    assert ((out < 0) == (torch.round(x / (GELU_MIN / 8)) < 0)).all()


def test_log2_example_quantizer_hand_values():
    # b=4: codes 0..14 are powers 2^-q, code 15 is zero; -log2(0.3) = 1.74 -> 2, -log2(0.01) = 6.64 -> 7
    lq = q("log2", 4)
    x = torch.tensor([1.0, 0.5, 0.3, 0.01, 1e-6, 0.0])
    assert lq.fake(x, torch.tensor([1.0])).tolist() == [1.0, 0.5, 0.25, 2.0 ** -7, 0.0, 0.0]
