"""MLP reconstruction (APHQ-ViT; ptq/recon/mlp.py): the ReLU swap in every MLP and nowhere else, the objective and
the first Adam step against hand computations, distillation lowering a tiny MLP's error, the clamp quantile
against numpy, the float model's accuracy after reconstruction on the test-bed, the save / load round trip
through a run, the stage order and the presets, bad input refused in one line."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import random_model_and_images
from timm.layers import Mlp
from torch import nn

from ptq.errors import PTQError
from ptq.models import build_model
from ptq.quant import quantize_model, resolve_ptq_config
from ptq.quant.recipe import recipe_stages
from ptq.recon.losses import get_recon_loss
from ptq.recon.mlp import distill, measure, objective, positive_quantile
from ptq.recon.mlp_state import MARK, install
from ptq.schema import MLPReconConfig

CALIB = ["quantizer=base_ptq", "bits=w4a4", "quantizer.recipe=[init_minmax]", "calib.n_images=8", "logger=none",
         "progress=false"]
FAST_MLP = ["mlp_recon=aphq", "mlp_recon.loss=mse", "mlp_recon.iters=3", "mlp_recon.eval_images=8"]


@pytest.fixture(autouse=True)
def one_thread():
    """Small ops: one thread (two threads on the shared cores make the tiny steps tens of times slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _weights(mlp: Mlp) -> dict[str, torch.Tensor]:
    return {"fc1.weight": mlp.fc1.weight, "fc1.bias": mlp.fc1.bias, "fc2.weight": mlp.fc2.weight,
            "fc2.bias": mlp.fc2.bias}


def _tiny(seed=0):
    """A tiny GELU MLP (4 -> 8 -> 4), its inputs [images 16, tokens 3, 4] and float output."""
    torch.manual_seed(seed)
    mlp = Mlp(4, 8, act_layer=nn.GELU).eval()
    x = torch.randn(16, 3, 4) * 2
    with torch.no_grad():
        return mlp, x, mlp(x)


def _mse(rc):
    return get_recon_loss("mse").criterion(None, rc)


def test_objective_and_measure_match_a_hand_computation():
    """rec_scale * mean_{images, channels} sum_tokens e^2, of the ReLU output plus clamp_weight x the clamped one."""
    mlp, x, target = _tiny()
    mc = MLPReconConfig(rec_scale=0.1, clamp_weight=2.0)
    w = {k: v.detach().numpy().astype(np.float64) for k, v in _weights(mlp).items()}
    xs, t, ub = x.numpy().astype(np.float64), target.numpy().astype(np.float64), 0.3

    def f(a_max):
        a = np.maximum(xs @ w["fc1.weight"].T + w["fc1.bias"], 0)
        return np.minimum(a, a_max) @ w["fc2.weight"].T + w["fc2.bias"]

    def loss(o):
        return 0.1 * ((o - t) ** 2).sum(1).mean()

    expected = loss(f(np.inf)) + 2.0 * loss(f(ub))
    got = objective(_weights(mlp), x, target, torch.arange(16), _mse(mc), ub, 2.0).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert got > loss(f(np.inf))   # the clamp term is there
    m_loss, m_mse = measure(_weights(mlp), x, target, _mse(mc), ub, 2.0, batch_size=16)
    assert m_loss == pytest.approx(expected, rel=1e-5)
    assert m_mse == pytest.approx(((f(np.inf) - t) ** 2).mean(), rel=1e-5)


def test_first_adam_step_is_minus_lr_times_the_gradient_sign():
    """Adam's first step moves each parameter by -lr * g / (|g| + eps): -lr sign(g) where g != 0 (lr at step 1 of
    the cosine schedule is the full lr); the gradient from autograd on the same batch, drawn with the same seed."""
    mlp, x, target = _tiny()
    mc = MLPReconConfig(iters=1, batch_size=5, lr=1e-2, rec_scale=0.1, clamp_weight=2.0)
    crit, ub = _mse(mc), 0.4
    idx = torch.randperm(16, generator=torch.Generator().manual_seed(7))[:5]
    w = {k: v.detach().clone().requires_grad_(True) for k, v in _weights(mlp).items()}
    objective(w, x[idx], target[idx], idx, crit, ub, 2.0).backward()
    new = distill(_weights(mlp), x, target, crit, ub, mc, torch.Generator().manual_seed(7))
    for k, v in w.items():
        g = v.grad
        expected = v.detach() - 1e-2 * g / (g.abs() + 1e-8)
        assert torch.allclose(new[k], expected, atol=1e-6), k


def test_distillation_lowers_the_relu_mlps_error():
    """Distilled, the ReLU MLP's error to the GELU MLP's output falls well below that of the plain swap."""
    mlp, x, target = _tiny()
    mc = MLPReconConfig(iters=300, batch_size=8, lr=1e-2, clamp_weight=0.0)
    crit = _mse(mc)
    before = measure(_weights(mlp), x, target, crit, 1.0, 0.0, 16)
    new = distill(_weights(mlp), x, target, crit, 1.0, mc, torch.Generator().manual_seed(0))
    after = measure(new, x, target, crit, 1.0, 0.0, 16)
    assert after[0] < 0.3 * before[0] and after[1] < 0.3 * before[1]
    with torch.no_grad():   # the swap itself: relu_mlp with the GELU MLP's weights is the MLP with ReLU
        swapped = copy.deepcopy(mlp)
        swapped.act = nn.ReLU()
        assert before[1] == pytest.approx((swapped(x) - target).square().mean().item(), rel=1e-5)


def test_positive_quantile_matches_numpy():
    """The ceil(q n)-th smallest positive value (the reference's rank), against numpy's sort."""
    v = torch.tensor([-1.0, 0.0, 3.0, 1.0, 2.0, -0.5, 5.0, 4.0])
    pos = np.sort(v.numpy()[v.numpy() > 0])   # 1 2 3 4 5
    for q, rank in ((0.98, 5), (0.5, 3), (0.2, 1), (0.61, 4)):
        assert positive_quantile(v, q) == pos[rank - 1]
    assert positive_quantile(torch.tensor([-1.0, 0.0]), 0.98) == 0.0


def _setup(compose, *overrides, model="fmnist_vit"):
    cfg = compose([*CALIB, f"model={model}", "model.checkpoint=null", *overrides])
    return cfg, *random_model_and_images(cfg, 16)


@pytest.mark.parametrize("model", ["fmnist_vit", "fmnist_swin"])
def test_relu_replaces_gelu_in_every_mlp_and_nowhere_else(compose, model):
    """Against the same method without MLP reconstruction: the module trees differ exactly at every MLP's act
    (GELU there, ReLU here), and of the model's weights only the MLPs' fc1 / fc2 differ."""
    cfg, m, x, rdata = _setup(compose, *FAST_MLP, model=model)
    ref = copy.deepcopy(m)
    mlps = [n for n, mod in m.named_modules() if isinstance(mod, Mlp)]
    rep = quantize_model(m, resolve_ptq_config(cfg), x, rdata[1][:8], progress=False, recon_data=rdata)
    quantize_model(ref, resolve_ptq_config(compose([*CALIB, f"model={model}", "model.checkpoint=null"])), x,
                   rdata[1][:8], progress=False)
    assert rep.stages == ["mlp_reconstruct", "init_minmax"]
    assert len(mlps) == 4 and [r["mlp"] for r in rep.mlp_reconstruction["mlps"]] == mlps
    got, want = ({n: type(mod) for n, mod in t.named_modules()} for t in (m, ref))
    assert set(got) == set(want)
    assert {n for n in got if got[n] is not want[n]} == {f"{n}.act" for n in mlps}
    assert all(got[f"{n}.act"] is nn.ReLU and want[f"{n}.act"] is nn.GELU for n in mlps)
    assert all(getattr(m.get_submodule(n), MARK) for n in mlps)
    mine = dict(m.named_parameters())
    differ = {k for k, v in ref.named_parameters() if "quantizer" not in k and not torch.equal(mine[k], v)}
    assert differ and all(k.rsplit(".", 1)[0] in {f"{n}.fc1" for n in mlps} | {f"{n}.fc2" for n in mlps}
                          for k in differ)


def test_stage_runs_first_and_presets_switch_it_on(compose):
    plain, mlp = (recipe_stages(resolve_ptq_config(compose(["quantizer=repq_vit", "recon=qdrop", "compensate=qwt",
                                                             *extra]))) for extra in ([], ["mlp_recon=aphq"]))
    assert mlp == ["mlp_reconstruct", *plain] and plain[-2:] == ["reconstruct", "compensate"]
    ada = resolve_ptq_config(compose(["quantizer=adalog", "recon=brecq", "mlp_recon=aphq"]))
    assert recipe_stages(ada) == ["mlp_reconstruct", "beam_search", "reconstruct", "fold_shift"]
    assert compose(["recon=aphq"]).mlp_recon.name == "aphq"
    official = compose(["recon=aphq_official"])
    assert official.mlp_recon.name == "aphq_official" and official.mlp_recon.loss_direction == "ones"
    assert official.recon.loss_direction == "ones" and official.recon.loss_eps == 1e-6
    assert compose(["recon=aphq", "mlp_recon=none"]).mlp_recon.name == "none"   # the command line wins
    assert compose(["mlp_recon=none", "recon=aphq"]).mlp_recon.name == "none"
    assert compose(["recon=brecq"]).mlp_recon.name == "none"


@pytest.mark.parametrize("overrides, message", [
    (["mlp_recon=aphq", "mlp_recon.loss=l3"], r"unknown mlp_recon.loss=l3; valid: aph, fisher"),
    (["mlp_recon=aphq", "mlp_recon.iters=-1"], r"impossible mlp_recon.iters=-1; valid: an integer >= 0"),
    (["mlp_recon=aphq", "mlp_recon.clamp_pct=1.5"], r"impossible mlp_recon.clamp_pct=1.5"),
    (["mlp_recon=aphq", "mlp_recon.lr=0"], r"impossible mlp_recon.lr=0"),
    (["mlp_recon=aphq", "mlp_recon.loss_direction=up"], r"unknown mlp_recon.loss_direction=up"),
    (["mlp_recon=aphq", "quantizer.recipe=[init_minmax,mlp_reconstruct,search]"],
     r"runs init_minmax before mlp_reconstruct; valid: mlp_reconstruct first"),
    (["quantizer.recipe=[mlp_reconstruct,init_minmax,search]"], r"names mlp_reconstruct but mlp_recon.name=none"),
])
def test_bad_settings_are_one_line(compose, overrides, message):
    with pytest.raises(PTQError, match=message) as e:
        resolve_ptq_config(compose(overrides))
    assert "\n" not in str(e.value)


def test_float_model_and_wrong_order_refused(compose):
    from ptq.app import check_config

    with pytest.raises(PTQError, match=r"mlp_recon.name=aphq changes the float model .* quantizer=fp32 calibrates "
                                       r"nothing; valid: a quantization method, or mlp_recon=none"):
        check_config(compose(["quantizer=fp32", "mlp_recon=aphq", "logger=none"]))
    from ptq.quant.calibrate import Calibrator
    from ptq.quant.stage import RecipeState
    from ptq.quant.wrap import quant_ops
    from ptq.recon.mlp import mlp_reconstruct

    cfg, m, x, rdata = _setup(compose, *FAST_MLP)
    pcfg = resolve_ptq_config(cfg)
    quantize_model(m, resolve_ptq_config(compose([*CALIB, "model.checkpoint=null"])), x, rdata[1][:8],
                   progress=False)
    state = RecipeState(m, quant_ops(m), pcfg, Calibrator(m, quant_ops(m), pcfg, x, rdata[1][:8],
                                                          torch.device("cpu")), torch.device("cpu"), False,
                        recon_data=rdata)
    with pytest.raises(PTQError, match=r"mlp_reconstruct must run before calibration, but patch_embed.proj is "
                                       r"already calibrated"):
        mlp_reconstruct(state)
    plain = Mlp(4, 8, act_layer=nn.ReLU)
    with pytest.raises(PTQError, match="this MLP's activation is ReLU"):
        install(plain, _weights(plain))


def test_run_records_both_float_accuracies_and_reloads(tmp_path, compose):
    """On the test-bed checkpoint and 500 test images, 50 steps (lr 1e-3, mse, 128 images): the modified float
    model stays within 1 top-1 point of the original (APHQ-ViT reports drops of 0.1-1.1 on ImageNet) and much
    closer to it than the plain GELU -> ReLU swap; the quantized run saved and reloaded gives the same model."""
    from ptq.app import run
    from ptq.evaluate import evaluate_logits, kl_to_reference

    settings = [*CALIB, "mlp_recon=aphq", "mlp_recon.loss=mse", "mlp_recon.iters=50", "mlp_recon.lr=1e-3",
                "recon.n_images=128", "data.max_test=500", "threads=1"]
    res = run(compose(settings), tmp_path / "a")
    mr = json.loads((tmp_path / "a" / "results.json").read_text())["mlp_reconstruction"]
    assert mr["top1_fp32"] == res["top1_fp32"] and abs(mr["top1_fp32_mlp"] - mr["top1_fp32"]) <= 1.0
    assert len(mr["mlps"]) == 4 and all(r["loss_after"] < 0.3 * r["loss_before"] for r in mr["mlps"])
    assert mr["seconds"] > 0 and mr["images"] == 128 and mr["clamp_pct"] == 0.98
    cfg = compose(settings)
    swapped = build_model(cfg.model)   # the swap alone, evaluated independently of the stage
    for mod in swapped.modules():
        if isinstance(mod, Mlp):
            mod.act = nn.ReLU()
    from ptq.data import build_data

    data = build_data(cfg, swapped)
    fp, _ = evaluate_logits(build_model(cfg.model), data.test_batches(250), torch.device("cpu"), False, 500, "")
    sw, _ = evaluate_logits(swapped, data.test_batches(250), torch.device("cpu"), False, 500, "")
    assert mr["kl_fp32_mlp"] < 0.25 * kl_to_reference(sw, fp)
    from ptq.report import recon_text, record

    row = record(tmp_path / "a" / "results.json", json.loads((tmp_path / "a" / "results.json").read_text()))
    assert recon_text(row) == f"none + MLP recon (fp32 {mr['top1_fp32']:.2f} -> {mr['top1_fp32_mlp']:.2f})"
    again = run(compose([*settings, f"quantizer.load={tmp_path / 'a' / 'quant_params.safetensors'}"]), tmp_path / "b")
    assert again["top1"] == res["top1"] and again["kl_fp32"] == res["kl_fp32"]
    assert again["mlp_reconstruction"]["top1_fp32_mlp"] == mr["top1_fp32_mlp"]
    with pytest.raises(PTQError, match=r"holds 4 reconstructed MLPs but this run has mlp_recon.name=none"):
        run(compose([*CALIB, "data.max_test=500", f"quantizer.load={tmp_path / 'a' / 'quant_params.safetensors'}"]))
