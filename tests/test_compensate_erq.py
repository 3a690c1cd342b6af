"""ERQ (ptq/compensate/erq.py, erq_steps.py): the ridge steps against numpy's closed forms, the rounding refinement
against a brute force over every floor / ceil choice and against a plain-loop greedy, the halves pass against a
numpy re-computation, zero-effect cases, the save/load round trip and bad input."""
from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from ptq.compensate import COMPENSATORS
from ptq.compensate.erq_steps import quantize_by_halves, refine_rounding, ridge_update, second_moment
from ptq.errors import PTQError
from ptq.models import build_model
from ptq.quant import quantize_model, resolve_ptq_config, save_quant_params

CALIB = ["quantizer=base_ptq", "bits=w4a4", "quantizer.recipe=[init_minmax]", "calib.n_images=8",
         "logger=none", "model.checkpoint=null", "model=fmnist_vit"]


@pytest.mark.parametrize("solver", ["solve64", "inverse32"])
@pytest.mark.parametrize("bias", [True, False])
def test_ridge_update_matches_the_closed_form(solver, bias):
    """W' = argmin ||A W'^T - y||^2 + lam ||W' - W||^2, A = [xq, 1]: W'^T = (A^T A + lam I)^{-1} (A^T y + lam W^T)."""
    rng = np.random.default_rng(0)
    xq, y = rng.normal(size=(200, 5)), rng.normal(size=(200, 3))
    w, b, lam = rng.normal(size=(3, 5)), rng.normal(size=3), 7.0
    a = np.c_[xq, np.ones(200)] if bias else xq
    wc = np.c_[w, b] if bias else w
    expect = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y + lam * wc.T).T
    w1, b1 = ridge_update(torch.tensor(xq, dtype=torch.float32), torch.tensor(y, dtype=torch.float32),
                          torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32) if bias else None,
                          lam, solver)
    got = np.c_[w1.numpy(), b1.numpy()] if bias else w1.numpy()
    assert np.allclose(got, expect, atol=1e-4)
    assert not np.allclose(got, wc, atol=1e-2)   # it does move the weights


def test_ridge_update_leaves_exact_weights_alone():
    """Zero effect: inputs not quantized (y = xq W^T + b exactly), nothing to correct, W' = W."""
    g = torch.Generator().manual_seed(0)
    xq, w, b = torch.randn(100, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(4, generator=g)
    w1, b1 = ridge_update(xq, xq @ w.T + b, w, b, 0.5)
    assert torch.allclose(w1, w, atol=1e-6) and torch.allclose(b1, b, atol=1e-6)


def _greedy_by_hand(df, dc, up, h, iterations):
    """The refinement for one row, in plain loops: each step the largest |gradient| among same-sign entries, set to
    the nearer of floor / ceil to delta - g, kept unless the error rises, stop at the first rejection."""
    up = list(up)
    for _ in range(iterations):
        d = np.where(up, dc, df)
        g = 2 * h @ d
        cand = [j for j in range(len(d)) if d[j] * g[j] > 0]
        if not cand:
            break
        j = max(cand, key=lambda k: abs(g[k]))
        v = d[j] - g[j]
        new = list(up)
        new[j] = abs(v - dc[j]) <= abs(v - df[j])
        d1 = np.where(new, dc, df)
        if d1 @ h @ d1 > d @ h @ d:
            break
        up = new
    return np.array(up)


def _tiny_problem(seed, k=6):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=k) * 2.3                 # weights in units of the step (step 1: grid = integers)
    df, dc = np.floor(w) - w, np.ceil(w) - w
    x = rng.normal(size=(50, k)) + rng.normal(size=k) * 0.5
    x[:, 1] = x[:, 0] + 0.1 * rng.normal(size=50)  # correlated inputs: nearest rounding is not optimal
    h = x.T @ x / 50
    return df, dc, np.abs(dc) < np.abs(df), h


def test_refinement_matches_a_plain_loop_greedy_and_never_loses_to_nearest():
    for seed in range(20):
        df, dc, up0, h = _tiny_problem(seed)
        up, _ = refine_rounding(*(torch.tensor(a)[None] for a in (df, dc, up0)), torch.tensor(h), 100)
        assert np.array_equal(up[0].numpy(), _greedy_by_hand(df, dc, up0, h, 100)), seed
        d1, d0 = np.where(up[0].numpy(), dc, df), np.where(up0, dc, df)
        assert d1 @ h @ d1 <= d0 @ h @ d0 + 1e-12


def test_refinement_reaches_the_brute_force_optimum_on_a_1x6_layer():
    """1 row x 6 columns, every one of the 2^6 floor / ceil choices tried: where the greedy path ends at the optimum
    (most of these problems) the refinement finds it; nearest rounding does not (the inputs are correlated)."""
    reached, beat_nearest = 0, 0
    for seed in range(20):
        df, dc, up0, h = _tiny_problem(seed)
        errs = {u: np.where(u, dc, df) @ h @ np.where(u, dc, df) for u in itertools.product([False, True], repeat=6)}
        best = min(errs.values())
        up, _ = refine_rounding(*(torch.tensor(a)[None] for a in (df, dc, up0)), torch.tensor(h), 100)
        got = errs[tuple(bool(v) for v in up[0])]
        assert got >= best - 1e-12
        reached += abs(got - best) < 1e-12
        beat_nearest += errs[tuple(bool(v) for v in up0)] > best + 1e-12 and abs(got - best) < 1e-12
    assert reached >= 10 and beat_nearest >= 3


def test_second_moment_forms():
    x = torch.tensor(np.random.default_rng(1).normal(size=(40, 3)))
    xn = x.numpy()
    assert np.allclose(second_moment(x, "raw").numpy(), xn.T @ xn / 40)
    mu = xn.mean(0)
    assert np.allclose(second_moment(x, "mean_cov").numpy(), np.outer(mu, mu) + np.cov(xn.T))


def _halves_by_hand(w, b, x, lam):
    """Step 2 without refinement, in numpy: grid step 1 (integers), columns [W, b] quantized half of the rest at a
    time by nearest rounding, the rest updated by -(I2^T I2 + lam I)^{-1} I2^T I1 delta1^T; the bias never."""
    cur = np.c_[w, b].astype(float)
    a = np.c_[x, np.ones(len(x))]
    n, start = cur.shape[1], 0
    while n - start > 1:
        half, rest = list(range(start, start + (n - start) // 2)), list(range(start + (n - start) // 2, n))
        delta1 = np.round(cur[:, half]) - cur[:, half]
        cur[:, half] += delta1
        i1, i2 = a[:, half], a[:, rest]
        cur[:, rest] += (-np.linalg.solve(i2.T @ i2 + lam * np.eye(len(rest)), i2.T @ i1 @ delta1.T)).T
        start += len(half)
    return cur[:, :-1], cur[:, -1]


def test_halves_pass_matches_numpy():
    rng = np.random.default_rng(3)
    w, b, x = rng.normal(size=(2, 7)) * 3, rng.normal(size=2), rng.normal(size=(60, 7))

    def choices(m):
        return torch.floor(m), torch.ceil(m), (torch.round(m) - torch.floor(m)) > 0.5

    w_at, up, b_fin, _ = quantize_by_halves(torch.tensor(w), torch.tensor(b), torch.tensor(x), choices, 3.0,
                                            refine=False, iterations=0, rows_per_group=1)
    w_np, b_np = _halves_by_hand(w, b, x, 3.0)
    final = torch.floor(w_at) + up.double()
    assert np.allclose(final.numpy(), w_np, atol=1e-9) and np.allclose(b_fin.numpy(), b_np, atol=1e-9)
    assert np.allclose(w_np, np.round(w_np))   # every weight on the grid, the bias free


def erq_setup(compose, *overrides, calib=tuple(CALIB)):
    """(config, random-weight model, 8 calibration images, 16 compensation images) for ERQ after `calib`."""
    cfg = compose([*calib, "compensate=erq", "compensate.batch_size=8", *overrides])
    torch.manual_seed(0)
    m = build_model(cfg.model)
    g = torch.Generator().manual_seed(1)
    x, cx = torch.randn(8, 1, 28, 28, generator=g), torch.randn(16, 1, 28, 28, generator=g)
    return cfg, m, x, (cx, torch.zeros(16, dtype=torch.long))


def _logits(m, x):
    with torch.no_grad():
        return m(x)


@pytest.mark.parametrize("compat", ["official", "paper"])
def test_erq_lowers_layer_errors_hardens_rounding_and_round_trips(compose, tmp_path, compat):
    from ptq.quant.modules import QLinear

    cfg, m, x, comp = erq_setup(compose, f"compensate.compat={compat}")
    fresh = copy.deepcopy(m)
    rep = quantize_model(m, resolve_ptq_config(cfg), x, comp[1][:8], progress=False, comp_data=comp)
    rows = rep.compensation["layers"]
    assert rows[0]["layer"] == "patch_embed.proj" and not rows[0]["ridge_step"] and rows[-1]["layer"] == "head"
    assert rep.compensation["added_params"] == 0 and rep.compensation["added_macs_per_image"] == 0
    assert all(r["out_mse_after"] < r["out_mse_before"] for r in rows if r["kind"] == "linear")
    assert sum(r["flips"] for r in rows) > 0
    qkv = m.get_submodule("blocks.0.attn.qkv")
    assert isinstance(qkv, QLinear) and qkv.weight_quantizer.rounding is not None
    with pytest.raises(PTQError, match=r"cannot run after reconstruction \(patch_embed.proj has a learned rounding"):
        COMPENSATORS["erq"].compensate_model(copy.deepcopy(m), comp[0], resolve_ptq_config(cfg).compensate)
    save_quant_params(m, tmp_path / "p.safetensors")
    load = compose([*CALIB, "compensate=erq", f"compensate.compat={compat}",
                    f"quantizer.load={tmp_path / 'p.safetensors'}"])
    quantize_model(fresh, resolve_ptq_config(load), x, comp[1][:8], progress=False)
    assert torch.equal(_logits(fresh, comp[0]), _logits(m, comp[0]))
    nocomp = compose([*CALIB, f"quantizer.load={tmp_path / 'p.safetensors'}"])
    with pytest.raises(PTQError, match=r"compensation maps but this run has compensate.name=none"):
        quantize_model(build_model(cfg.model), resolve_ptq_config(nocomp), x, comp[1][:8], progress=False)


def test_erq_with_quantizers_off_leaves_logits_unchanged(compose, monkeypatch):
    """Every quantizer off (as the QwT zero-effect test): no layer is edited, the logits stay exactly the same."""
    from test_compensate import run_stage_with_quantizers_off

    cfg, m, x, comp = erq_setup(compose)
    state, ref = run_stage_with_quantizers_off(compose, monkeypatch, cfg, m, x, comp)
    assert state.report.compensation["layers"] == [] and torch.equal(_logits(m, comp[0]), ref)


@pytest.mark.parametrize("overrides, message", [
    (["compensate.two_part_percentile=100"], r"impossible compensate.two_part_percentile=100.0; valid: a number "
                                             r"in \[50, 100\)"),
    (["compensate.two_part_percentile=40"], r"impossible compensate.two_part_percentile=40.0"),
    (["compensate.two_part_rows_per_column=0"], r"impossible compensate.two_part_rows_per_column=0; valid: an "
                                                r"integer >= 1"),
    (["compensate=qwt", "compensate.two_part=true"], r"compensate.two_part=true is an option of compensate.name=erq"
                                                     r" .*not of qwt; valid: compensate.two_part=false or null"),
    (["compensate.coe=-1"], r"impossible compensate.coe=-1"),
    (["compensate.head_lambda=-0.1"], r"impossible compensate.head_lambda=-0.1"),
    (["compensate.iterations=-1"], r"impossible compensate.iterations=-1"),
    (["compensate.rows_per_group=0"], r"impossible compensate.rows_per_group=0"),
    (["compensate.blocks=[0]"], r"compensate.blocks=\['0'\] is not supported by compensate.name=erq"),
])
def test_bad_erq_input_is_one_line(compose, overrides, message):
    with pytest.raises(PTQError, match=message) as e:
        resolve_ptq_config(compose([*CALIB, "compensate=erq", *overrides]))
    assert "\n" not in str(e.value)


def test_reinitialize_keeps_a_searched_multiplier():
    """uniform (searched): the new scale is the min-max initialization on W' times the search's param / initial;
    uniform_asym (not searched, RepQ-ViT): the percentile fit on W' alone."""
    from ptq.compensate.erq import reinitialize
    from ptq.quantizers import QUANTIZERS, Layout

    g = torch.Generator().manual_seed(0)
    w0, w1 = torch.randn(4, 8, generator=g), 3 * torch.randn(4, 8, generator=g)
    q = QUANTIZERS["uniform"](4, Layout(-2, 4, 4))
    q.initialize(w0)
    q.set_param(q.param * 0.8)                     # what a search picked: 0.8 x the initialization
    reinitialize(q, w1)
    expect = w1.abs().amax(dim=1) / (2 ** 3 - 0.5) * 0.8
    assert torch.allclose(q.param, expect)
    a = QUANTIZERS["uniform_asym"](4, Layout(-2, 4, 4))
    a.initialize(w0)
    reinitialize(a, w1)
    fresh = QUANTIZERS["uniform_asym"](4, Layout(-2, 4, 4))
    fresh.initialize(w1)
    assert torch.equal(a.param, fresh.param) and torch.equal(a.zero_point, fresh.zero_point)
