"""AdaLog (SPEC-adalog.md): the unit-checkable facts of its section 7, each against a value computed by hand or an
independent formula (Python floats / numpy), plus the beam search, the LayerNorm reparameterization, the shift
fold and a small end-to-end calibration."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ptq.quant.fpcs import beam_search, keep_best, self_scores
from ptq.quantizers import QUANTIZERS, Layout
from ptq.quantizers.adalog import GELU_SHIFT, adalog_table
from ptq.quantizers.uniform_grid import chunked_quantiles

BITS = (3, 4, 6)
Q_LIST = range(10, 138)


def adalog(bits: int, form: str = "official", **options):
    return QUANTIZERS["adalog"](bits, Layout(), form=form, **options)


def reference_levels(bits: int, q: int, s: float = 1.0) -> list[float]:
    """s 2^(-floor(cq/37)) T_b[cq mod 37], c = 0..2^b-1, with T_b from its definition (Python floats)."""
    d = 2 ** (bits + 1) - 2
    table = [round(2 ** (-j / 37) * d) / d for j in range(37)]
    return [s * 2.0 ** -(c * q // 37) * table[(c * q) % 37] for c in range(2 ** bits)]


# -- the table -----------------------------------------------------------------------------------------------------
def test_table_t3_by_hand():
    t = adalog_table(3).tolist()
    assert t[:4] == pytest.approx([1, 1, 13 / 14, 13 / 14], abs=1e-7)
    assert t[-1] == pytest.approx(7 / 14, abs=1e-7)


@pytest.mark.parametrize("bits,distinct", [(3, 8), (4, 16), (6, 37)])
def test_table_values_are_multiples_within_half_and_one(bits, distinct):
    d = 2 ** (bits + 1) - 2
    t = adalog_table(bits, dtype=torch.float64)
    assert t[0] == 1 and ((t >= 0.5) & (t <= 1)).all()
    assert torch.allclose(t * d, torch.round(t * d), atol=1e-9)
    assert len(set(t.tolist())) == distinct
    if bits == 6:
        assert t[36].item() == pytest.approx(64 / 126, abs=1e-12)


# -- the quantizer ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", BITS)
def test_q37_equals_log2_on_any_input_both_dequants(bits):
    """With q = r = 37 the base is 2: Log2's code round(-log2 u), 2^b non-zero levels s 2^-c, zero beyond."""
    x = torch.cat([torch.rand(4000) * 1.5, torch.tensor([0.0, 1e-9, 2.0 ** -7.5, 1.0])])
    s = 1.25
    for how in ("lut", "exact"):
        q = adalog(bits, dequant=how)
        out = q.fake(x, torch.tensor([[s, 37.0]]))
        xs = x.numpy().astype(np.float64)
        u = np.clip(xs / s, 1e-15, 1)
        c = np.round(-np.log2(u))
        ref = np.where(c < 2 ** bits, s * 2.0 ** -np.clip(c, 0, 2 ** bits - 1), 0.0)
        assert np.allclose(out.numpy(), ref, rtol=1e-6, atol=0), how


@pytest.mark.parametrize("bits", BITS)
def test_levels_strictly_decreasing_and_match_formula(bits):
    for qv in Q_LIST:
        q = adalog(bits)
        codes = torch.arange(2 ** bits, dtype=torch.float64)   # float64: at 6 bits the smallest levels
        # (2^-150 and below) underflow float32 to 0
        levels = q.dequant(codes, torch.tensor(1.0, dtype=torch.float64), torch.tensor(float(qv),
                                                                                        dtype=torch.float64),
                           "lut").tolist()
        assert all(a > b for a, b in zip(levels, levels[1:])), qv
        assert levels == pytest.approx(reference_levels(bits, qv), rel=1e-6)
        assert levels[0] == 1.0


def test_zero_threshold_b3_q37():
    """x / s < 2^(-(2^b - 1/2) q / 37) gives 0: at b = 3, q = 37 the threshold is 2^-7.5 = 0.0055243."""
    thr = 2 ** -7.5
    assert thr == pytest.approx(0.0055243, abs=1e-7)
    q = adalog(3)
    out = q.fake(torch.tensor([thr * 0.999, thr * 1.001]), torch.tensor([[1.0, 37.0]]))
    assert out[0] == 0 and out[1] == pytest.approx(2.0 ** -7)


@pytest.mark.parametrize("bits,first_nonzero_q", [(3, None), (4, 119), (6, 30)])
def test_exact_zero_quirk(bits, first_nonzero_q):
    """official: Q(0) is exactly 0 at 3 bits for every q; not at 4 bits for q >= 119 nor 6 bits for q >= 30
    (the 1e-15 floor's code round(49.83 * 37 / q) is then a valid code). paper: always exactly 0."""
    zero = torch.zeros(1)
    for qv in Q_LIST:
        v = adalog(bits).fake(zero, torch.tensor([[1.0, float(qv)]])).item()
        expect_nonzero = first_nonzero_q is not None and qv >= first_nonzero_q
        by_hand = round(-math.log2(1e-15) * 37 / qv) < 2 ** bits
        assert (v != 0) == expect_nonzero == by_hand, qv
        assert adalog(bits, "paper").fake(zero, torch.tensor([[1.0, float(qv)]])).item() == 0


@pytest.mark.parametrize("bits", BITS)
def test_level_counts_by_form(bits):
    x = torch.rand(20000) ** 8
    for form, count in (("official", 2 ** bits + 1), ("paper", 2 ** bits)):
        q = adalog(bits, form)
        assert len(torch.unique(q.fake(x, torch.tensor([[1.0, 20.0]])))) <= count == q.max_values()


def test_shift_and_fold_leave_fc2_output_unchanged():
    """AdaLog(x + beta) - beta before the fold; after it the quantizer returns AdaLog(x + beta) and the bias takes
    -beta sum_j W_hat[:, j]: the quantized linear's output is unchanged (<= 1e-5 relative)."""
    from ptq.quant.modules import QLinear
    from ptq.quant.recipe import RecipeState
    from ptq.quant.stages.adalog import fold_shift

    torch.manual_seed(0)
    lin = nn.Linear(12, 5)
    wq = QUANTIZERS["uniform_grid"](4, Layout(-2, 5, 5))
    xq = QUANTIZERS["adalog"](4, Layout(), shift=GELU_SHIFT)
    op = QLinear(lin, wq, xq)
    x = nn.functional.gelu(torch.randn(3, 7, 12) * 2)
    wq.initialize(lin.weight.detach())
    xq.set_param(torch.tensor([[3.0, 45.0]]))
    op.set_enabled(True)
    with torch.no_grad():
        before = op(x)
        shifted = xq(x)
    ref = xq.fake(x + 0 * x, torch.tensor([[3.0, 45.0]]))
    assert torch.equal(shifted, ref)
    assert shifted.min() >= -GELU_SHIFT - 1e-6
    fold_shift(RecipeState(model=nn.Sequential(), ops={"fc2": op}, pcfg=None, calibrator=None, device="cpu"))
    with torch.no_grad():
        after = op(x)
    assert bool(xq.folded) and xq(x).min() >= 0
    assert torch.allclose(after, before, rtol=0, atol=1e-5 * before.abs().max().item())


# -- the uniform grid ---------------------------------------------------------------------------------------------
ZGRID = {  # (operand, bits) -> (Z, first z) from the section 3.2 table
    ("weight", 3): (4, 2), ("weight", 4): (8, 4), ("weight", 6): (16, 24),
    ("input", 3): (8, 0), ("input", 4): (16, 0), ("input", 6): (16, 24),
    ("conv", 3): (4, 2), ("conv", 4): (8, 4), ("conv", 6): (32, 16),
    # before the reference's commit 75a57d2 (section 3.2): linear weights / matmul operands with Z = n
    ("weight_prefix", 3): (4, 2), ("weight_prefix", 4): (8, 4), ("weight_prefix", 6): (32, 16)}


@pytest.mark.parametrize("operand,bits", sorted(ZGRID))
def test_grid_matches_section_3_2(operand, bits):
    torch.manual_seed(bits)
    w = torch.randn(6, 40) * torch.linspace(0.2, 2, 6)[:, None]
    q = QUANTIZERS["uniform_grid"](bits, Layout(-2, 6, 6), z_grid=operand)
    g = q.grid(w)
    zc, z0 = ZGRID[(operand, bits)]
    sc = 128 // zc
    assert g.shape == (128, 6, 2) and zc * sc == 128
    v = w.double().numpy()
    d_lo = np.quantile(v, 0.9, axis=1) - np.quantile(v, 0.1, axis=1)
    d_hi = v.max(axis=1) - v.min(axis=1)
    for k in (0, 1, sc - 1, sc, 127):
        j, i = divmod(k, sc)
        s = (d_lo + i / (sc - 1) * (d_hi - d_lo)) / (2 ** bits - 1)
        if operand == "input":
            s = np.maximum(s, 1e-4)
        assert np.allclose(g[k, :, 0].numpy(), s, rtol=1e-5)
        assert (g[k, :, 1] == z0 + j).all()


def test_uniform_grid_output_on_its_levels():
    q = QUANTIZERS["uniform_grid"](3, Layout())
    x = torch.randn(500) * 3
    s, z = 0.7, 3.0
    out = q.fake(x, torch.tensor([[s, z]]))
    levels = {(k - z) * s for k in range(8)}
    assert all(any(abs(v - lv) < 1e-6 for lv in levels) for v in out.tolist())
    # by hand: 1.0 / 0.7 = 1.43 -> 1, + 3 = 4 -> (4 - 3) 0.7; far below: clamp at code 0 -> -3 * 0.7
    assert q.fake(torch.tensor([1.0, -100.0]), torch.tensor([[s, z]])).tolist() == pytest.approx([0.7, -2.1])


def test_chunk_averaged_quantiles():
    """Above 2^24 values the official form averages the quantiles of 2^k contiguous chunks; below, exact."""
    v = torch.arange(10, dtype=torch.float32)[None]
    assert chunked_quantiles(v, (0.0, 1.0), True).flatten().tolist() == [0.0, 9.0]
    big = torch.cat([torch.zeros(2 ** 24), torch.ones(2 ** 24) * 4])[None]
    p = chunked_quantiles(big, (1.0, 0.0), True).flatten().tolist()
    assert p == [2.0, 2.0]   # chunks [0 ... 0], [4 ... 4]: the mean of maxima (and minima) is 2
    assert chunked_quantiles(big, (1.0, 0.0), False).flatten().tolist() == [4.0, 0.0]


# -- the beam search ----------------------------------------------------------------------------------------------
def _counting_plan(q, x):
    seen = []

    def score(cand):
        seen.append(cand.clone())
        return self_scores(q, x, cand, 8.0)

    return seen, score


def test_uniform_fpcs_768_candidates_offsets_and_delta():
    torch.manual_seed(0)
    x = torch.randn(4, 30, dtype=torch.float64)   # float64: the late stages' offsets are below float32's resolution
    q = QUANTIZERS["uniform_grid"](4, Layout(-2, 4, 4))
    plan = q.beam_plan(x)
    seen, score = _counting_plan(q, x)
    best, scored, _ = beam_search(plan, score)
    assert scored == 768 and [c.shape[0] for c in seen] == [128] * 6
    grid = q.grid(x)
    delta1 = grid[1, :, 0] - grid[0, :, 0]
    # stage 1: the 16 survivors of stage 0, each spawning 8 children at {+-0.5, +-0.357, +-0.214, +-0.071} delta_1
    surv = keep_best(seen[0], self_scores(q, x, seen[0], 8.0), 16)
    offsets = (seen[1][:, :, 0].reshape(16, 8, 4) - surv[:, None, :, 0]) / delta1
    expect = torch.tensor([k / 7 - 0.5 for k in range(8)], dtype=torch.float64)
    assert torch.allclose(offsets, expect[None, :, None].expand(16, 8, 4), atol=1e-4)
    assert expect.abs().tolist() == pytest.approx([0.5, 0.3571, 0.2143, 0.0714, 0.0714, 0.2143, 0.3571, 0.5],
                                                  abs=1e-4)
    # zero points never change after stage 0; delta_{t+1} = delta_t / 7.5
    assert torch.equal(seen[1][:, :, 1].reshape(16, 8, 4), surv[:, None, :, 1].expand(16, 8, 4))
    spread = [(c[:, :, 0].reshape(-1, 8, 4)[:, -1] - c[:, :, 0].reshape(-1, 8, 4)[:, 0])[0] for c in seen[1:]]
    for a, b in zip(spread, spread[1:]):
        assert torch.allclose(b, a / 7.5, rtol=1e-3)
    # the result is the best of the last stage
    last = seen[-1]
    assert torch.equal(best, keep_best(last, self_scores(q, x, last, 8.0), 1)[0])


def test_adalog_fpcs_896_candidates_and_delta():
    torch.manual_seed(0)
    x = nn.functional.gelu(torch.randn(6, 50, dtype=torch.float64) * 2)
    q = adalog(4, shift=GELU_SHIFT)
    q.param = q.param.double()
    q.start(x)
    plan = q.beam_plan(x)
    seen, score = _counting_plan(q, x)
    _, scored, _ = beam_search(plan, score)
    assert scored == 896 and [c.shape[0] for c in seen] == [128] * 7
    assert seen[0][:, 0, 1].tolist() == list(map(float, Q_LIST))       # q in 10..137 with the current s
    assert len(set(seen[1][:, 0, 1].tolist())) == 8                     # 16 scales x the 8 best q
    pos, _ = torch.sort(x[x > 0])
    n = pos.numel()
    lo, hi = pos[math.ceil(0.9 * n) - 1].item() + GELU_SHIFT, pos[-1].item() + GELU_SHIFT
    assert set(np.round(seen[1][:, 0, 0].numpy(), 5)) == set(np.round(np.linspace(lo, hi, 16), 5))
    spreads = [(c[:, 0, 0].reshape(32, 4)[:, 3] - c[:, 0, 0].reshape(32, 4)[:, 0])[0].item() for c in seen[2:]]
    assert spreads[0] == pytest.approx((hi - lo) / 15, rel=1e-4)
    for a, b in zip(spreads, spreads[1:]):
        assert b == pytest.approx(a / 3.5, rel=1e-3)


@pytest.mark.parametrize("form", ["official", "paper"])
@pytest.mark.parametrize("case", ["q_list", "scale_x_q", "distinct"])
def test_candidate_sets_equal_one_candidate_at_a_time(form, case):
    """`fake` of a candidate set and `fake_chunks` (work shared per distinct scale) give, bit for bit, what `fake`
    gives for each candidate alone; fake_chunks yields every candidate exactly once."""
    torch.manual_seed(1)
    x = nn.functional.gelu(torch.randn(4, 30) * 2)
    q = adalog(4, form=form, shift=GELU_SHIFT)
    scales = {"q_list": [3.0], "scale_x_q": [2.5, 3.0, 4.0], "distinct": []}[case]
    if case == "distinct":
        cand = torch.stack([torch.linspace(2.0, 5.0, 9), torch.arange(20.0, 29.0)], 1)
    else:
        cand = torch.tensor([[s, qv] for s in scales for qv in (12.0, 37.0, 50.0, 91.0)])
    cand = cand[torch.randperm(len(cand))].unsqueeze(1)                          # [C, 1, 2], scales interleaved
    alone = torch.stack([q.fake(x, c[None])[0] for c in cand])                   # c[None]: a set of one
    assert torch.equal(q.fake(x, cand), alone)
    seen = []
    for sel, values in q.fake_chunks(x, cand, step=3):
        idx = torch.arange(len(cand))[sel]
        assert values.shape[0] <= 3 and torch.equal(values, alone[idx])
        seen += idx.tolist()
    assert sorted(seen) == list(range(len(cand)))


def test_adalog_start_and_softmax_plan():
    x = nn.functional.gelu(torch.randn(500) * 2)
    q = adalog(4, shift=GELU_SHIFT)
    q.start(x)
    lo, hi = q.scale_range(x)
    assert q.param[0, 0].item() == pytest.approx((lo + 126 / 127 * (hi - lo)).item()) and q.param[0, 1] == 37
    soft = adalog(4, fixed_scale=True)
    soft.start(x.softmax(0))
    plan = soft.beam_plan(x)
    assert len(plan) == 1 and plan[0][1] == 1 and (plan[0][0](None)[:, 0, 0] == 1).all()


def test_beam_search_rescoring_centres_never_loses_the_best():
    """paper form re-scores the survivors with their children: the best score never falls from one stage to the
    next, and the survivors of each stage are among the next stage's candidates; the reference form scores only
    the children (quirk 7)."""
    torch.manual_seed(3)
    x = torch.randn(1, 64) ** 3
    q = QUANTIZERS["uniform_grid"](3, Layout(-2, 1, 1))
    for rescore in (True, False):
        bests, seen = [], []

        def score(cand, bests=bests, seen=seen):
            s = self_scores(q, x, cand, 8.0)
            bests.append(s.max().item())
            seen.append(cand)
            return s

        beam_search(q.beam_plan(x), score, rescore_centres=rescore)
        assert [c.shape[0] for c in seen] == ([128] + [144] * 5 if rescore else [128] * 6)
        if rescore:
            assert all(b >= a for a, b in zip(bests, bests[1:]))
            assert torch.equal(seen[1][:16], keep_best(seen[0], self_scores(q, x, seen[0], 8.0), 16))


# -- the official form's float32 details (issue 22: the reference's candidates, bit for bit) -----------------------
def _linspace_f32(n: int) -> np.ndarray:
    """torch.linspace(0, 1, n)'s CPU rule written out in numpy float32: i step below the middle, 1 - (n-1-i) step
    from it, step = float32(1 / (n - 1))."""
    step = np.float32(1) / np.float32(n - 1)
    return np.array([np.float32(i) * step if i < n // 2 else np.float32(1) - np.float32(n - 1 - i) * step
                     for i in range(n)], dtype=np.float32)


def test_official_grid_takes_the_reference_lower_quantile_and_linspace_fractions():
    """Hand-made rows where the old rule (quantile at 0.1, fractions i / (S-1)) and the reference's (quantile at
    1 - 0.9 in float32 = 0.100000024, torch.linspace fractions) give different candidate scales."""
    w = torch.tensor([[0.0, 0.0] + [1e6] * 9])       # P_0.1 = 0; at 0.100000024: 0.24, so d_lo = 999999.75, not 1e6
    p_low = np.float32(1) - np.float32(0.9)
    assert float(p_low) == pytest.approx(0.100000024, abs=1e-9) and p_low != np.float32(0.1)
    v = w[0].double().numpy()
    for form, p in (("official", float(p_low)), ("paper", 0.1)):
        q = QUANTIZERS["uniform_grid"](4, Layout(-2, 1, 1), form=form)   # weight grid at 4 bits: 8 z x 16 s
        g = q.grid(w)[:16, 0, 0].numpy()
        d_lo = np.float32(np.float32(np.quantile(v, 0.9)) - np.float32(np.quantile(v, p)))
        d_hi = np.float32(v.max() - v.min())
        frac = _linspace_f32(16) if form == "official" else (np.arange(16, dtype=np.float32) / np.float32(15))
        expect = (d_lo + frac * (d_hi - d_lo)) / np.float32(15)
        assert np.array_equal(g, expect.astype(np.float32)), form
    official = QUANTIZERS["uniform_grid"](4, Layout(-2, 1, 1), form="official").grid(w)[:16, 0, 0]
    paper = QUANTIZERS["uniform_grid"](4, Layout(-2, 1, 1), form="paper").grid(w)[:16, 0, 0]
    assert (official != paper).any()
    assert not np.array_equal(_linspace_f32(16), np.arange(16, dtype=np.float32) / np.float32(15))


def test_official_refinement_offsets_are_linspace_and_inputs_keep_the_floor():
    """Stage-1 children at (linspace(0, 1, e) - 1/2) delta_1 in the official form (k / (e - 1) - 1/2 in paper);
    refined input scales never fall below 1e-4 (the reference clamps them like the grid's)."""
    from ptq.quantizers.base import refinements

    surv = torch.tensor([[[1.0, 3.0]]])                                  # one survivor (s, z)
    delta = torch.tensor([0.3])
    for linspace, frac in ((True, _linspace_f32(8)), (False, np.arange(8, dtype=np.float32) / np.float32(7))):
        make, _ = refinements(delta, 8, 2, 16, linspace=linspace)[0]
        child = make(surv)[:, 0, 0].numpy()
        assert np.array_equal(child, np.float32(1.0) + (frac - np.float32(0.5)) * np.float32(0.3))
    make, _ = refinements(torch.tensor([1e-3]), 8, 2, 16, floor=1e-4)[0]
    low = make(torch.tensor([[[2e-4, 3.0]]]))[:, 0, 0]
    assert low.min().item() == pytest.approx(1e-4) and (low >= 1e-4).all()
    x = torch.randn(3, 40) * 1e-5                                          # tiny inputs: scales at the floor
    q = QUANTIZERS["uniform_grid"](4, Layout(), form="official", z_grid="input")
    for make, _keep in q.beam_plan(x)[1:]:
        assert (make(q.grid(x)[:16])[..., 0] >= 1e-4).all()


def test_official_post_gelu_delta_is_the_grid_spacing():
    """delta_1 of the post-GELU refinements: s_1 - s_0 of the 16-point grid in the official form (the reference's),
    (s_hi - s_lo) / 15 in paper; the children at (linspace(0, 1, 4) - 1/2) delta_1 (official)."""
    torch.manual_seed(4)
    x = torch.rand(200) * 7.3 + 0.01
    for form in ("official", "paper"):
        q = adalog(4, form=form, shift=GELU_SHIFT)
        q.start(x)
        plan = q.beam_plan(x)
        lo, hi = q.scale_range(x)
        s_grid = plan[1][0](plan[0][0](None)[:8])[:16, 0, 0]
        delta = s_grid[1] - s_grid[0] if form == "official" else (hi - lo) / 15
        frac = torch.linspace(0, 1, 4) if form == "official" else torch.arange(4.0) / 3
        child = plan[2][0](torch.tensor([[[5.0, 37.0]]]))[:, 0, 0]
        assert torch.equal(child, 5.0 + (frac - 0.5) * delta)
    assert s_grid[1] - s_grid[0] != (hi - lo) / 15         # this draw: the two rules differ in the last bit


def test_official_search_table_is_the_references():
    """The reference dequantizes its own AdaLog search (q and (s, q) candidates) through round(t / d) d in float32
    (t = 2^(-j/37), d = 1 / D_b, both rounded to float32), its inference through T_b: they differ by one ulp in
    20-26 of 37 entries. The official form does the same (a candidate set: the search table; the calibrated
    parameter: T_b); the paper form uses T_b everywhere."""
    from ptq.quantizers.adalog import reference_search_table

    for bits in BITS:
        d = 2 ** (bits + 1) - 2
        t = np.array([2.0 ** (-j / 37) for j in range(37)], dtype=np.float32)
        ref = np.round(t / np.float32(1.0 / d)) * np.float32(1.0 / d)
        assert np.array_equal(reference_search_table(bits).numpy(), ref)
        diff = int((ref != adalog_table(bits).numpy()).sum())
        assert 20 <= diff <= 26 and np.abs(ref - adalog_table(bits).numpy()).max() < 1e-7
    x = torch.tensor([0.93, 0.5, 0.3])   # codes at q = 10 (4 bits): 1, 10, 17 -> table entries 10, 26, 22
    for form in ("official", "paper"):
        q = adalog(4, form=form)
        cand = torch.tensor([[[1.0, 10.0]]])
        table = reference_search_table(4) if form == "official" else adalog_table(4)
        c = torch.round(-torch.log2(x) * 37 / 10)
        e = torch.floor(c * 10 / 37)
        j = (c * 10 - e * 37).long()
        assert torch.equal(q.fake(x, cand)[0], 2.0 ** -e * table[j])
        assert torch.equal(q.fake(x, cand[0]), 2.0 ** -e * adalog_table(4)[j])
    assert not torch.equal(reference_search_table(4)[[10, 26, 22]], adalog_table(4)[[10, 26, 22]])


@pytest.mark.parametrize("form", ["official", "paper"])
def test_official_scores_linear_candidates_on_the_direct_output(monkeypatch, form):
    """The official form scores a linear's weight and input candidates as the reference does, on the direct
    output -mean_t (x_q W_c^T + b - y)^2 summed over samples (checked against numpy float64 on every candidate of
    every beam stage), never through the Gram-matrix shortcut of calib.fast_paths, whose other order of sums
    flipped near-ties of the last beam stages (24 of 96 attn.proj rows on an outside checkpoint); the paper form
    keeps the shortcut."""
    from ptq.metrics import get_metric
    from ptq.quant.modules import QLinear
    from ptq.quant.stages import adalog as stage

    torch.manual_seed(5)
    lin = nn.Linear(6, 4)
    x = torch.randn(3, 7, 6)
    with torch.no_grad():
        y = lin(x)
    op = QLinear(lin, QUANTIZERS["uniform_grid"](4, Layout(-2, 4, 4), form=form),
                 QUANTIZERS["uniform_grid"](4, Layout(), form=form, z_grid="input"))
    shortcut_calls, checked, scoring = [], [], []
    real_shortcut, real_beam, real_fit = stage.mse_shortcut, stage.run_beam, stage.LayerSearch.fit

    def noting_fit(self, operand, score):
        scoring.append(score)
        return real_fit(self, operand, score)

    def spy_shortcut(*a, **k):
        shortcut_calls.append(a[1])
        return real_shortcut(*a, **k)

    def checking_beam(plan, fn, rescore_centres):
        def checked_fn(cand):
            scores = fn(cand)
            operand = "weight" if cand.shape[1] == 4 else "input"
            if form == "official" and scoring[-1] == "output" and checked.count(operand) < 3:
                xq = op.input_quantizer.fake(x, op.input_quantizer.param) if operand == "weight" else None
                for c in range(cand.shape[0]):
                    if operand == "weight":
                        wc = op.weight_quantizer.fake(op.weight, cand[c]).double().numpy()
                        xc = xq.double().numpy()
                    else:
                        wc = op.weight_quantizer.fake(op.weight, op.weight_quantizer.param).double().numpy()
                        xc = op.input_quantizer.fake(x, cand[c]).double().numpy()
                    err = (xc @ wc.T + lin.bias.detach().double().numpy() - y.double().numpy()) ** 2
                    expect = -err.mean(axis=1).sum(axis=0)                          # per output row
                    expect = expect if operand == "weight" else np.array([expect.mean()])
                    np.testing.assert_allclose(scores[c].numpy(), expect, rtol=1e-4, atol=1e-9)
                checked.append(operand)
            return scores
        return real_beam(plan, checked_fn, rescore_centres=rescore_centres)

    monkeypatch.setattr(stage, "mse_shortcut", spy_shortcut)
    monkeypatch.setattr(stage, "run_beam", checking_beam)
    monkeypatch.setattr(stage.LayerSearch, "fit", noting_fit)
    with torch.no_grad():
        stage.LayerSearch("lin", op, {"input": x, "out": y}, get_metric("mse"), 8.0, fast=True).run(2)
    if form == "official":
        assert shortcut_calls == [] and checked.count("weight") == 3 and checked.count("input") == 3
    else:
        assert "weight" in shortcut_calls


# -- the LayerNorm reparameterization -----------------------------------------------------------------------------
def test_layernorm_reparameterization_keeps_function_and_aligns_ranges():
    """Section 2.6 on a LayerNorm -> linear pair: float output unchanged (<= 1e-5 relative) and every channel's
    grid [-z_c s_c, (2^b - 1 - z_c) s_c] mapped onto [-z s, (2^b - 1 - z) s] (z rounded mean of z_c)."""
    from ptq.quant.modules import QLinear
    from ptq.quant.stages.repq import fold_channel_scales

    torch.manual_seed(0)
    norm, lin = nn.LayerNorm(8), nn.Linear(8, 5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(8) * 3 + 0.1)
        norm.bias.copy_(torch.randn(8))
    op = QLinear(lin, QUANTIZERS["uniform_grid"](4, Layout(-2, 5, 5)), None)   # disabled: float weight
    x = torch.randn(2, 9, 8) * 4
    with torch.no_grad():
        before = op(norm(x))
        y = norm(x)
    s = torch.rand(8) + 0.05
    z = torch.randint(0, 16, (8,)).float()
    with torch.no_grad():
        s_bar, z_bar = fold_channel_scales(norm, op, s, z, round_zero=True)
        after = op(norm(x))
        y_new = norm(x)
    assert z_bar == torch.round(z.mean()) and s_bar == pytest.approx(s.mean().item())
    assert torch.allclose(after, before, rtol=0, atol=1e-5 * before.abs().max().item())
    r, o = s / s_bar, (z_bar - z) * s_bar
    assert torch.allclose(y_new, y / r - o, atol=1e-5)
    lo_c, hi_c = -z * s, (15 - z) * s          # channel c's grid, transformed like its values
    assert torch.allclose(lo_c / r - o, torch.full((8,), (-z_bar * s_bar).item()), atol=1e-5)
    assert torch.allclose(hi_c / r - o, torch.full((8,), ((15 - z_bar) * s_bar).item()), atol=1e-5)


# -- end to end ----------------------------------------------------------------------------------------------------
def _tiny_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=24,
                             depth=1, num_heads=2, num_classes=4).eval()


@pytest.mark.parametrize("compat", ["official", "paper"])
def test_adalog_calibrates_a_small_vit(compat):
    """The whole recipe on a 1-block ViT: every quantizer initialized, LayerNorm pairs folded (float model
    unchanged), the shift folded into fc2's bias, 2^b (+1) log levels after softmax and GELU."""
    from hydra import compose, initialize_config_dir

    from ptq.quant.config import resolve_ptq_config
    from ptq.quant.recipe import quantize_model
    from ptq.quant.wrap import quant_ops, set_quant_enabled

    with initialize_config_dir(config_dir=str(__import__("pathlib").Path(__file__).parents[1] / "conf"),
                               version_base=None):
        cfg = compose("config", overrides=["quantizer=adalog", "bits=w4a4", f"quantizer.compat={compat}",
                                           "logger=none"])
    pcfg = resolve_ptq_config(cfg)
    model = _tiny_vit()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    report = quantize_model(model, pcfg, x, torch.zeros(6, dtype=torch.long), progress=False)
    ops = quant_ops(model)
    assert all(q.initialized for op in ops.values() for q in op.quantizers().values())
    fc2 = ops["blocks.0.mlp.fc2"]
    assert bool(fc2.input_quantizer.folded)
    set_quant_enabled(model, False)
    with torch.no_grad():
        w_hat = fc2.weight_quantizer.fake(fc2.weight, fc2.weight_quantizer.param)
        fc2.bias += GELU_SHIFT * w_hat.sum(dim=1)            # undo the fold: the float model is the original
        fl = model(x)
        fc2.bias -= GELU_SHIFT * w_hat.sum(dim=1)
    assert torch.allclose(fl, ref, atol=1e-4 * ref.abs().max().item())   # the reparameterization kept the function
    assert ops["blocks.0.attn.qkv"].input_quantizer.layout.axis is None            # folded to per tensor
    set_quant_enabled(model, True)
    with torch.no_grad():
        out = model(x)
    assert torch.isfinite(out).all()
    steps = {s.operand for layer in report.layers for s in layer.steps}
    assert {"weight:self", "input:self", "weight:output", "input:output", "a:output", "b:output"} <= steps
    conv = next(layer for layer in report.layers if layer.name.endswith("patch_embed.proj"))
    assert [s.operand for s in conv.steps] == ["weight:output"]                   # one search, no rounds
    fc2_steps = next(layer for layer in report.layers if layer.name.endswith("fc2")).steps
    assert [s.operand for s in fc2_steps[:3]] == ["weight:self", "input:output", "weight:output"]


def test_adalog_with_its_reconstruction_preset():
    """`quantizer=adalog recon=adalog` (few steps): reconstruction runs between the search and the shift fold,
    learns the weights' rounding (uniform_grid) and the scales of AdaLog and uniform_grid activations, leaves q
    and zero points fixed, hardens the rounding, and the fold still keeps the quantized output."""
    from hydra import compose, initialize_config_dir

    from ptq.quant.config import resolve_ptq_config
    from ptq.quant.recipe import quantize_model
    from ptq.quant.wrap import quant_ops

    with initialize_config_dir(config_dir=str(__import__("pathlib").Path(__file__).parents[1] / "conf"),
                               version_base=None):
        cfg = compose("config", overrides=["quantizer=adalog", "bits=w4a4", "recon=adalog", "recon.iters=4",
                                           "recon.batch_size=4", "recon.warmup=0", "recon.lr_step=1e-2",
                                           "recon.eval_images=8", "logger=none"])
    pcfg = resolve_ptq_config(cfg)
    model = _tiny_vit()
    g = torch.Generator().manual_seed(2)
    x, rx = torch.randn(6, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)
    searched = {}

    def remember(state):
        for name, op in state.ops.items():
            for operand, q in op.quantizers().items():
                searched[(name, operand)] = q.param.clone()

    from ptq.quant import recipe

    recipe.STAGES["remember"] = remember
    try:
        pcfg.recipe = ["beam_search", "remember", "fold_shift"]
        report = quantize_model(model, pcfg, x, torch.zeros(6, dtype=torch.long), progress=False,
                                recon_data=(rx, torch.zeros(8, dtype=torch.long)))
    finally:
        del recipe.STAGES["remember"]
    assert report.stages == ["beam_search", "remember", "reconstruct", "fold_shift"]
    ops = quant_ops(model)
    fc2 = ops["blocks.0.mlp.fc2"]
    assert bool(fc2.input_quantizer.folded) and fc2.weight_quantizer.rounding is not None
    moved = []
    for (name, operand), before in searched.items():
        after = quant_ops(model)[name].quantizer(operand).param
        assert torch.equal(after[:, 1], before[:, 1]), (name, operand)   # q / zero points fixed
        moved.append(not torch.equal(after[:, 0], before[:, 0]))
    assert any(moved)                                                     # some scale learned
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
