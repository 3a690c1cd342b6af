"""Block reconstruction (ptq/recon/): AdaRound's pieces against hand-computed values, hardening, the capability
split (learnable vs fixed quantizers), zero iterations = the calibrated model, save/load, and a short run that
lowers the blocks' output error on the trained test-bed."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import random_model_and_images

from ptq.errors import PTQError
from ptq.models import build_model
from ptq.quant import quant_ops, quantize_model, resolve_ptq_config, save_quant_params
from ptq.quantizers import QUANTIZERS, Layout
from ptq.recon.adaround import annealed_b, cosine_lr, hard_rounding, init_alpha, rectified_sigmoid, rounding_regularizer

CALIB = ["quantizer=base_ptq", "bits=w4a4", "quantizer.search.n=4", "quantizer.search.rounds=1", "calib.n_images=8",
         "logger=none"]


def test_rectified_sigmoid_by_hand():
    h = rectified_sigmoid(torch.tensor([0.0, 50.0, -50.0, math.log(3.0)]))
    # sigmoid(ln 3) = 3/4 -> 0.75 * 1.2 - 0.1 = 0.8; sigmoid(0) = 1/2 -> 0.5; the ends are clipped to 1 and 0
    assert torch.allclose(h, torch.tensor([0.5, 1.0, 0.0, 0.8]), atol=1e-6)


def test_init_alpha_starts_at_the_float_weight_and_hardens_to_nearest():
    frac = torch.tensor([0.25, 0.75, 0.5, 0.5, 0.0])
    up = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0])     # nearest rounding (half to even: 0.5 may go either way)
    alpha = init_alpha(frac, up)
    # h = 0.25 <=> sigmoid(alpha) = 0.35 / 1.2 <=> alpha = -ln(1.2 / 0.35 - 1)
    assert alpha[0].item() == pytest.approx(-math.log(1.2 / 0.35 - 1.0), abs=1e-6)
    assert torch.allclose(rectified_sigmoid(alpha), frac, atol=1e-6)
    assert torch.equal(hard_rounding(alpha), up)      # ties follow the nearest rounding, not the sign of ~0


def test_rounding_regularizer_by_hand():
    h = torch.tensor([0.0, 1.0, 0.5, 0.25])
    # 1 - |2h - 1|^b: 0, 0, 1, 1 - 0.5^b
    assert rounding_regularizer(h, 2.0).item() == pytest.approx(1.75)
    assert rounding_regularizer(h, 20.0).item() == pytest.approx(2.0 - 0.5 ** 20)


def test_annealing_schedule_by_hand():
    """AdaLog's numbers: 20000 steps, 4000 warm-up steps, b = 2 + 18 max(0, 1 - (t - 4000) / 16000)."""
    args = dict(iters=20000, warmup=0.2, b_start=20.0, b_end=2.0)
    assert annealed_b(1, **args) is None and annealed_b(3999, **args) is None
    assert annealed_b(4000, **args) == pytest.approx(20.0)
    assert annealed_b(12000, **args) == pytest.approx(11.0)
    assert annealed_b(16000, **args) == pytest.approx(2 + 18 * 0.25)
    assert annealed_b(20000, **args) == pytest.approx(2.0)
    assert annealed_b(1, iters=10, warmup=0.0, b_start=20.0, b_end=2.0) == pytest.approx(2 + 18 * 0.9)  # t from 1
    assert cosine_lr(1, 100, 4e-5) == pytest.approx(4e-5) and cosine_lr(51, 100, 4e-5) == pytest.approx(2e-5)


def test_hardening_by_hand_and_restore():
    q = QUANTIZERS["uniform"](4, Layout())            # codes -8..7
    q.set_param(torch.tensor([0.5]))
    q.enabled = True
    w = torch.tensor([0.3, 0.6, -0.7, 3.9, 0.25])     # w / s = 0.6, 1.2, -1.4, 7.8, 0.5
    frac, up_nearest = q.floor_frac(w)
    assert torch.allclose(frac, torch.tensor([0.6, 0.2, 0.6, 0.8, 0.5]), atol=1e-6)
    assert torch.equal(up_nearest, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]))   # 0.5 rounds to even 0
    q.harden(w, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0]))
    # floor + up = 0, 2, -1, 8 (clipped to 7), 1 -> times 0.5
    expected = torch.tensor([0.0, 1.0, -0.5, 3.5, 0.5])
    assert torch.equal(q(w), expected)
    assert torch.equal(q.rounding, torch.tensor([-1.0, 1.0, 0.0, 0.0, 1.0]))   # offsets from nearest rounding
    fresh = QUANTIZERS["uniform"](4, Layout())
    fresh.restore(q.export())
    fresh.enabled = True
    assert torch.equal(fresh(w), expected)


def test_asymmetric_rounding_keeps_the_zero_point_by_hand():
    """RepQ-ViT's uniform_asym: 3 bits, D = 0.5, z = 2 (codes 0..7 stand for (c - 2) D)."""
    q = QUANTIZERS["uniform_asym"](3, Layout())
    q.set_param(torch.tensor([0.5]))
    q.zero_point.fill_(2.0)
    q.enabled = True
    w = torch.tensor([0.3, 0.6, -0.7, 3.9, 0.25])     # w / D = 0.6, 1.2, -1.4, 7.8, 0.5
    frac, up_nearest = q.floor_frac(w)
    assert torch.allclose(frac, torch.tensor([0.6, 0.2, 0.6, 0.8, 0.5]), atol=1e-6)
    assert torch.equal(up_nearest, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]))
    # floor + up = 0, 2, -1, 8, 1; + z = 2, 4, 1, 10 (clipped to 7), 3; - z, times D:
    expected = torch.tensor([0.0, 1.0, -0.5, 2.5, 0.5])
    assert torch.equal(q.soft_fake(w, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0])), expected)
    q.harden(w, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0]))
    assert torch.equal(q(w), expected)
    assert torch.equal(q.rounding, torch.tensor([-1.0, 1.0, 0.0, 0.0, 1.0]))
    fresh = QUANTIZERS["uniform_asym"](3, Layout())
    fresh.restore(q.export())
    fresh.enabled = True
    assert torch.equal(fresh.zero_point, torch.tensor([2.0])) and torch.equal(fresh(w), expected)
    step = torch.tensor([0.5], requires_grad=True)          # LSQ: gradient reaches D, z stays
    q.fake_ste(torch.tensor([0.3, 5.0]), step).sum().backward()
    # 0.3: (round(0.6) = 1) D -> d/dD = 1 - 0.6 (straight-through) ; 5.0: clipped at code 7, (7 - 2) D -> 5
    assert torch.allclose(step.grad, torch.tensor([0.4 + 5.0]))


def test_capabilities_are_declared_per_quantizer():
    for kind in ("uniform", "uniform_asym", "uniform_grid"):
        assert QUANTIZERS[kind].learnable_rounding and QUANTIZERS[kind].learnable_step
    for kind in ("twin_softmax", "twin_gelu", "log2", "log_sqrt2"):
        assert not QUANTIZERS[kind].learnable_rounding and not QUANTIZERS[kind].learnable_step


def test_recon_config_presets_and_errors(compose):
    pcfg = resolve_ptq_config(compose(["recon=qdrop"]))
    assert pcfg.recon.name == "qdrop" and pcfg.recon.drop_prob == 0.5 and pcfg.recon.n_images == 1024
    assert resolve_ptq_config(compose([])).recon.name == "none"
    ada = resolve_ptq_config(compose(["recon=adalog"])).recon
    assert (ada.iters, ada.inputs, ada.head_loss, ada.rec_scale, ada.lr_rounding) == (20000, "float", "kl", 0.1, 1e-3)
    with pytest.raises(PTQError, match=r"recon.loss=l7; valid: "):
        resolve_ptq_config(compose(["recon=brecq", "recon.loss=l7"]))
    with pytest.raises(PTQError, match=r"recon.drop_prob=1.5"):
        resolve_ptq_config(compose(["recon=qdrop", "recon.drop_prob=1.5"]))


def _random_setup(compose, *overrides):
    cfg = compose([*CALIB, "model.checkpoint=null", *overrides])
    return cfg, *random_model_and_images(cfg, 24)


@pytest.mark.parametrize("model", ["fmnist_vit", "fmnist_swin"])
def test_zero_iterations_leave_the_calibrated_model_unchanged(compose, model):
    cfg, m, x, recon = _random_setup(compose, f"model={model}", "quantizer=ptq4vit")
    ref = copy.deepcopy(m)
    quantize_model(ref, resolve_ptq_config(cfg), x, recon[1][:8], progress=False)
    cfg0 = compose([*CALIB, "model.checkpoint=null", f"model={model}", "quantizer=ptq4vit", "recon=brecq",
                    "recon.iters=0", "recon.batch_size=8"])
    report = quantize_model(m, resolve_ptq_config(cfg0), x, recon[1][:8], progress=False, recon_data=recon)
    assert report.stages == ["init_minmax", "search", "reconstruct"]
    assert len(report.reconstruction["units"]) == (6 if model == "fmnist_vit" else 7)
    with torch.no_grad():
        assert torch.equal(m(recon[0]), ref(recon[0]))


def test_reconstruction_learns_repq_vit_rounding_and_steps(compose):
    """RepQ-ViT's quantizers declare the capabilities too: after its reparameterization the uniform_asym weights
    learn their rounding and the uniform_asym activations their scales; log-sqrt(2) softmax and zero points stay."""
    cfg, m, x, recon = _random_setup(compose, "quantizer=repq_vit", "recon=brecq", "recon.iters=4",
                                     "recon.batch_size=8", "recon.warmup=0", "recon.lr_step=1e-3")
    calibrated = copy.deepcopy(m)
    quantize_model(calibrated, resolve_ptq_config(compose([*CALIB, "model.checkpoint=null", "quantizer=repq_vit"])),
                   x, recon[1][:8], progress=False)
    report = quantize_model(m, resolve_ptq_config(cfg), x, recon[1][:8], progress=False, recon_data=recon)
    blocks = [r for r in report.reconstruction["units"] if r["unit"].startswith("blocks.")]
    assert blocks and all(r["rounding_tensors"] == 4 and r["step_sizes"] > 0 and r["iters"] == 4 for r in blocks)
    before, after = quant_ops(calibrated), quant_ops(m)
    for name, op in after.items():
        for operand, q in op.quantizers().items():
            old = before[name].quantizer(operand)
            if q.kind == "uniform_asym":
                assert torch.equal(q.zero_point, old.zero_point), (name, operand)
            if q.kind == "log_sqrt2":
                assert torch.equal(q.param, old.param), (name, operand)
    assert any(op.weight_quantizer.rounding is not None for op in after.values() if hasattr(op, "weight"))


def test_reconstruction_refuses_a_model_whose_after_reconstruct_stage_ran(compose):
    """Once a stage that must follow reconstruction has run (AdaLog's shift fold), the model with its quantizers
    off is no longer the float model, so reconstructing it again would fit a wrong target: a one-line error."""
    cfg, m, x, recon = _random_setup(compose, "quantizer=base_ptq", "recon=brecq", "recon.iters=0")
    m._ptq_after_reconstruct = "fold_shift"
    with pytest.raises(PTQError, match=r"recon.name=brecq cannot run .* stage fold_shift already ran"):
        quantize_model(m, resolve_ptq_config(cfg), x, recon[1][:8], progress=False, recon_data=recon)


def test_learned_state_round_trips_through_save_and_load(compose, tmp_path):
    overrides = ["quantizer=ptq4vit", "recon=qdrop", "recon.iters=6", "recon.batch_size=8", "recon.warmup=0",
                 "recon.lr_step=1e-3"]
    cfg, m, x, recon = _random_setup(compose, *overrides)
    fresh = copy.deepcopy(m)
    quantize_model(m, resolve_ptq_config(cfg), x, recon[1][:8], progress=False, recon_data=recon)
    roundings = [op.weight_quantizer.rounding for op in quant_ops(m).values() if hasattr(op, "weight")]
    assert all(r is not None for r in roundings) and any(r.abs().sum() > 0 for r in roundings)
    save_quant_params(m, tmp_path / "p.safetensors")
    cfg_load = compose([*CALIB, "model.checkpoint=null", *overrides, f"quantizer.load={tmp_path / 'p.safetensors'}"])
    quantize_model(fresh, resolve_ptq_config(cfg_load), x, recon[1][:8], progress=False)
    with torch.no_grad():
        assert torch.equal(fresh(recon[0]), m(recon[0]))


@pytest.mark.slow
def test_short_reconstruction_lowers_block_output_error_on_the_testbed(compose):
    """Trained test-bed ViT, real images: 40 steps lower every transformer block's output MSE; the twin
    quantizers (no capability) keep their calibrated parameters while the uniform steps move."""
    from ptq.data import build_data

    cfg = compose([*CALIB, "quantizer=ptq4vit", "recon=brecq", "recon.iters=40", "recon.n_images=128",
                   "recon.eval_images=128", "recon.batch_size=16", "data.max_test=16"])
    model = build_model(cfg.model)
    data = build_data(cfg, model)
    pcfg = resolve_ptq_config(cfg)
    calibrated = copy.deepcopy(model)
    quantize_model(calibrated, resolve_ptq_config(compose([*CALIB, "quantizer=ptq4vit", "data.max_test=16"])),
                   data.calib_images, data.calib_labels, progress=False)
    report = quantize_model(model, pcfg, data.calib_images, data.calib_labels, progress=False,
                            recon_data=(data.recon_images, data.recon_labels))
    rows = {r["unit"]: r for r in report.reconstruction["units"]}
    for name in ("blocks.0", "blocks.1", "blocks.2", "blocks.3"):
        assert rows[name]["mse_after"] < rows[name]["mse_before"], rows[name]
    before, after = quant_ops(calibrated), quant_ops(model)
    moved = 0
    for name, op in after.items():
        for operand, q in op.quantizers().items():
            same = torch.equal(q.param, before[name].quantizer(operand).param)
            if not (q.learnable_step and operand != "weight"):
                assert same, (name, operand)        # fixed: twin softmax / GELU, and weight scales
            moved += not same
    assert moved > 0
