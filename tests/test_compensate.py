"""Closed-form compensation (ptq/compensate/): the solvers against numpy's lstsq and the closed forms, the R^2 gate,
zero-effect compensation, Swin's patch merging untouched, the save/load round trip, the stage order, bad input."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ptq.compensate import COMPENSATORS, Compensator, Fit, register_compensator
from ptq.compensate.side import LinearSide, attached
from ptq.compensate.solver import channel_affine_least_squares, linear_least_squares, r2_score
from ptq.errors import PTQError
from ptq.models import build_model
from ptq.quant import quantize_model, resolve_ptq_config, save_quant_params
from ptq.quant.recipe import recipe_stages

CALIB = ["quantizer=base_ptq", "bits=w4a4", "quantizer.recipe=[init_minmax]", "calib.n_images=8",
         "logger=none", "model.checkpoint=null"]


def _problem(n=300, d=5, m=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d)
    y = x @ rng.normal(size=(d, m)) + rng.normal(size=m) + 0.3 * rng.normal(size=(n, m))
    return x, y


@pytest.mark.parametrize("solver", ["solve64", "inverse32"])
def test_least_squares_matches_numpy_lstsq(solver):
    x, y = _problem()
    w, b, r2 = linear_least_squares(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32),
                                    0.0, solver)
    theta, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)
    tol = 1e-8 if solver == "solve64" else 2e-3
    assert np.allclose(w.numpy(), theta[:-1], atol=tol * 10, rtol=tol)
    assert np.allclose(b.numpy(), theta[-1], atol=tol * 10)
    pred = np.c_[x, np.ones(len(x))] @ theta
    r2_np = 1 - ((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    assert r2 == pytest.approx(r2_np, abs=1e-4)


def test_ridge_matches_the_closed_form():
    """(X1^T X1 + lambda N I') Theta = X1^T Y with the intercept unpenalized, solved by numpy."""
    x, y = _problem(seed=1)
    lam, n = 0.7, len(x)
    x1 = np.c_[x, np.ones(n)]
    penalty = np.diag([1.0] * x.shape[1] + [0.0])
    theta = np.linalg.solve(x1.T @ x1 + lam * n * penalty, x1.T @ y)
    w, b, _ = linear_least_squares(torch.tensor(x), torch.tensor(y), lam, "solve64")
    assert np.allclose(w.numpy(), theta[:-1], atol=1e-5) and np.allclose(b.numpy(), theta[-1], atol=1e-5)
    assert not np.allclose(theta, np.linalg.lstsq(x1, y, rcond=None)[0], atol=1e-3)   # the ridge does something


def test_channel_affine_matches_per_channel_fits():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(200, 4)) * [1, 2, 0.5, 3]
    f = q * [1.1, 0.9, 1.0, 1.3] + [0.2, -0.1, 0.0, 0.5] + 0.05 * rng.normal(size=(200, 4))
    g, b, r2 = channel_affine_least_squares(torch.tensor(q), torch.tensor(f))
    for c in range(4):
        gc, bc = np.polyfit(q[:, c], f[:, c], 1)
        assert g[c].item() == pytest.approx(gc, abs=1e-5) and b[c].item() == pytest.approx(bc, abs=1e-5)
    lam = 0.5   # ridge pulls g toward 1: minimize sum (g q + b - f)^2 + lam N (g - 1)^2, solved as a 2x2 system
    g2, b2, _ = channel_affine_least_squares(torch.tensor(q), torch.tensor(f), lam)
    for c in range(4):
        a = np.array([[(q[:, c] ** 2).sum() + lam * 200, q[:, c].sum()], [q[:, c].sum(), 200]])
        rhs = np.array([(q[:, c] * f[:, c]).sum() + lam * 200, f[:, c].sum()])
        gc, bc = np.linalg.solve(a, rhs)
        assert g2[c].item() == pytest.approx(gc, abs=1e-5) and b2[c].item() == pytest.approx(bc, abs=1e-5)
    d, pred = f - q, (g.numpy() - 1) * q + b.numpy()
    assert r2 == pytest.approx(1 - ((d - pred) ** 2).sum() / ((d - d.mean(0)) ** 2).sum(), abs=1e-6)


def test_r2_by_hand():
    y = torch.tensor([[1.0], [2.0], [3.0]])
    assert r2_score(y, torch.tensor([[1.0], [2.0], [4.0]])) == pytest.approx(1 - 1 / 2)   # ss_res 1, ss_tot 2
    assert r2_score(torch.zeros(3, 2), torch.zeros(3, 2)) == 0.0    # nothing to explain: never kept


def _setup(compose, *overrides, model="fmnist_vit"):
    cfg = compose([*CALIB, f"model={model}", *overrides])
    torch.manual_seed(0)
    m = build_model(cfg.model)
    g = torch.Generator().manual_seed(1)
    x, cx = torch.randn(8, 1, 28, 28, generator=g), torch.randn(16, 1, 28, 28, generator=g)
    return cfg, m, x, (cx, torch.zeros(16, dtype=torch.long))


def _run(cfg, m, x, comp):
    return quantize_model(m, resolve_ptq_config(cfg), x, comp[1][:8], progress=False, comp_data=comp)


def _logits(m, x):
    with torch.no_grad():
        return m(x)


def _neutralized(m):
    """A copy whose maps add nothing (W = 0, b = 0; gain 1, bias 0): the uncompensated model, exactly."""
    plain = copy.deepcopy(m)
    for side in attached(plain).values():
        for name, t in side.named_buffers():
            t.fill_(1.0 if name == "gain" else 0.0)
    return plain


@pytest.mark.parametrize("name", ["qwt", "qwt_v2"])
def test_compensation_lowers_the_error_is_recorded_and_round_trips(compose, tmp_path, name):
    cfg, m, x, comp = _setup(compose, f"compensate={name}", "compensate.batch_size=8")
    fresh = copy.deepcopy(m)
    rep = _run(cfg, m, x, comp)
    rows = rep.compensation["blocks"]
    assert [r["block"] for r in rows] == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    assert rep.stages == ["init_minmax", "compensate"]
    kept = [r for r in rows if r["kept"]]
    assert kept and all(r["r2"] > 0 for r in kept) and list(attached(m)) == [r["block"] for r in kept]
    assert rep.compensation["added_params"] == sum(r["params"] for r in rows)
    per_block = 96 * 96 + 96 if name == "qwt" else 2 * 96
    assert all(r["params"] == per_block for r in kept)
    fp = copy.deepcopy(m)
    from ptq.quant import set_quant_enabled

    set_quant_enabled(fp, False)   # the float model: side paths act only with their block's quantizers on
    ref = _logits(fp, comp[0])
    err = ((_logits(m, comp[0]) - ref) ** 2).mean()
    assert err < ((_logits(_neutralized(m), comp[0]) - ref) ** 2).mean()
    # saved with the calibrated parameters, reloaded: identical logits
    save_quant_params(m, tmp_path / "p.safetensors")
    load = compose([*CALIB, "model=fmnist_vit", f"compensate={name}", f"quantizer.load={tmp_path / 'p.safetensors'}"])
    quantize_model(fresh, resolve_ptq_config(load), x, comp[1][:8], progress=False)
    assert torch.equal(_logits(fresh, comp[0]), _logits(m, comp[0]))
    nocomp = compose([*CALIB, "model=fmnist_vit", f"quantizer.load={tmp_path / 'p.safetensors'}"])
    with pytest.raises(PTQError, match=r"holds \d+ compensation maps but this run has compensate.name=none"):
        quantize_model(build_model(cfg.model), resolve_ptq_config(nocomp), x, comp[1][:8], progress=False)


def test_zero_effect_compensation_leaves_logits_unchanged(compose, monkeypatch):
    """Quantizers off (every op float): Y_fp - Y_q = 0, each block's R^2 is 0, nothing is attached, logits equal."""
    cfg, m, x, comp = _setup(compose, "compensate=qwt")
    state, ref = run_stage_with_quantizers_off(compose, monkeypatch, cfg, m, x, comp)
    assert all(r["r2"] == 0.0 and not r["kept"] for r in state.report.compensation["blocks"])
    assert not attached(m) and torch.equal(_logits(m, comp[0]), ref)


def run_stage_with_quantizers_off(compose, monkeypatch, cfg, m, x, comp):
    """Calibrate m (BasePTQ min-max), switch every quantizer off for good, run the `compensate` stage of `cfg` on it;
    returns the stage's state and the logits on the compensation images before the stage."""
    from ptq.compensate.stage import compensate
    from ptq.quant.calibrate import Calibrator
    from ptq.quant.modules import QuantOp
    from ptq.quant.recipe import RecipeState
    from ptq.quant.wrap import quant_ops

    pcfg = resolve_ptq_config(cfg)
    quantize_model(m, resolve_ptq_config(compose([*CALIB, "model=fmnist_vit"])), x, comp[1][:8], progress=False)
    set_enabled = QuantOp.set_enabled
    monkeypatch.setattr(QuantOp, "set_enabled", lambda self, enabled: set_enabled(self, False))
    m.apply(lambda mod: mod.set_enabled(False) if isinstance(mod, QuantOp) else None)
    ref = _logits(m, comp[0])
    state = RecipeState(m, quant_ops(m), pcfg, Calibrator(m, quant_ops(m), pcfg, x, comp[1][:8], torch.device("cpu")),
                        torch.device("cpu"), False, comp_data=comp)
    compensate(state)
    return state, ref


def test_r2_gate_drops_maps_at_or_below_the_threshold(compose):
    """A compensator whose fit has R^2 <= gate is never attached; the first above is."""
    r2s = iter([-0.5, 0.0, 0.3, 0.31])

    @register_compensator("_test_const")
    class Const(Compensator):
        def fit(self, x, y_fp, y_q, cc):
            return Fit(LinearSide(torch.zeros(x.shape[1], y_fp.shape[1]), torch.full((y_fp.shape[1],), 0.1), "fp32"),
                       next(r2s), params=1, macs_per_token=0)

    try:
        cfg, m, x, comp = _setup(compose, "compensate=qwt", "compensate.name=_test_const", "compensate.r2_gate=0.3")
        rep = _run(cfg, m, x, comp)
    finally:
        del COMPENSATORS["_test_const"]
    assert [r["kept"] for r in rep.compensation["blocks"]] == [False, False, False, True]
    assert list(attached(m)) == ["blocks.3"]


def test_swin_patch_merging_and_stem_are_not_compensated(compose):
    cfg, m, x, comp = _setup(compose, "compensate=qwt", model="fmnist_swin")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rep = _run(cfg, m, x, comp)
    names = [r["block"] for r in rep.compensation["blocks"]]
    assert names == ["layers.0.blocks.0", "layers.0.blocks.1", "layers.1.blocks.0", "layers.1.blocks.1"]
    assert set(attached(m)) <= set(names)
    from timm.models.swin_transformer import PatchMerging

    merging = [mod for mod in m.modules() if isinstance(mod, PatchMerging)]
    assert merging and all(not hasattr(mod, "compensation") for mod in merging)
    sd = m.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in before.items() if "downsample" in k)   # quantized names unchanged


def test_stage_order(compose):
    ada = resolve_ptq_config(compose(["quantizer=adalog", "compensate=qwt"]))
    assert recipe_stages(ada) == ["beam_search", "compensate", "fold_shift"]
    ada_recon = resolve_ptq_config(compose(["quantizer=adalog", "compensate=qwt", "recon=brecq"]))
    assert recipe_stages(ada_recon) == ["beam_search", "reconstruct", "compensate", "fold_shift"]
    repq = resolve_ptq_config(compose(["quantizer=repq_vit", "compensate=qwt_v2", "recon=qdrop"]))
    assert recipe_stages(repq)[-2:] == ["reconstruct", "compensate"]


@pytest.mark.parametrize("overrides, message", [
    (["compensate=qwt", "compensate.name=qwt3"], r"unknown compensate.name=qwt3; valid: erq, none, qwt, qwt_v2"),
    (["compensate=qwt_v2", "compensate.compat=official"], r"compensate.compat=official does not exist for "
                                                          r"compensate.name=qwt_v2"),
    (["compensate=qwt", "compensate.compat=exact"], r"unknown compensate.compat=exact"),
    (["compensate=qwt", "compensate.n_images=0"], r"impossible compensate.n_images=0"),
    (["compensate=qwt", "compensate.ridge=-1"], r"impossible compensate.ridge=-1"),
    (["compensate=qwt", "compensate.precision=bf16"], r"unknown compensate.precision=bf16; valid: fp16, fp32"),
    (["compensate=qwt", "compensate.augmentation=mixup"], r"unknown compensate.augmentation=mixup"),
    (["compensate=qwt", "compensate.r2_gate=1.5"], r"impossible compensate.r2_gate=1.5"),
    (["compensate=qwt", "quantizer=adalog", "quantizer.recipe=[beam_search,fold_shift,compensate]"],
     r"runs fold_shift before compensate"),
    (["compensate=qwt", "quantizer.recipe=[init_minmax,compensate,search]"], r"runs search after compensate"),
    (["quantizer.recipe=[init_minmax,search,compensate]"], r"names compensate but compensate.name=none"),
])
def test_bad_input_is_one_line(compose, overrides, message):
    with pytest.raises(PTQError, match=message) as e:
        resolve_ptq_config(compose(overrides))
    assert "\n" not in str(e.value)


def test_bad_block_name_and_too_many_images(compose):
    cfg, m, x, comp = _setup(compose, "compensate=qwt", "compensate.blocks=[blocks.9]")
    with pytest.raises(PTQError, match=r"unknown compensate.blocks entry blocks.9; valid: all, blocks.0"):
        _run(cfg, m, x, comp)
    from ptq.data import build_data

    cfg = compose([*CALIB, "model=fmnist_vit", "compensate=qwt", "compensate.n_images=60000"])
    with pytest.raises(PTQError, match=r"compensate.n_images=60000 is impossible"):
        build_data(cfg)
