"""Quantized test-bed models end to end: float equivalence, calibration, gradient sources, save/load, presets."""
from __future__ import annotations

import copy

import pytest
import torch
from hydra import compose, initialize_config_dir

from ptq.metrics import NEEDS_GRAD
from ptq.models import build_model
from ptq.models.registry import PROJECT_ROOT
from ptq.quant import quantize_model, resolve_ptq_config, save_quant_params, set_quant_enabled, wrap_model
from ptq.quant.calibrate import Calibrator
from ptq.quant.modules import QMatMul

FAST = ["quantizer.search.n=4", "quantizer.search.rounds=1", "calib.n_images=8", "model.checkpoint=null"]


def cfg_for(*overrides: str):
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*FAST, *overrides])


def _model_and_data(cfg, n=8):
    torch.manual_seed(0)
    model = build_model(cfg.model)
    x = torch.randn(n, 1, 28, 28)
    y = torch.randint(0, 10, (n,))
    return model, x, y


@pytest.mark.parametrize("model", ["fmnist_vit", "fmnist_swin"])
def test_wrapped_model_with_quantization_off_equals_float(model):
    cfg = cfg_for(f"model={model}")
    m, x, _ = _model_and_data(cfg)
    ref = m(x)
    ops = wrap_model(m, resolve_ptq_config(cfg))
    assert sum(isinstance(o, QMatMul) for o in ops.values()) == 2 * (4 if model == "fmnist_vit" else 4)
    assert (m(x) - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("model", ["fmnist_vit", "fmnist_swin"])
@pytest.mark.parametrize("quantizer", ["base_ptq", "ptq4vit"])
def test_quantize_and_reload(model, quantizer, tmp_path):
    cfg = cfg_for(f"model={model}", f"quantizer={quantizer}", "bits=w4a4")
    m, x, y = _model_and_data(cfg)
    ref = m(x).detach()
    fresh = copy.deepcopy(m)
    report = quantize_model(m, resolve_ptq_config(cfg), x, y, progress=False)
    assert len(report.layers) == len(list(filter(None, report.layers)))
    out = m(x).detach()
    assert not torch.allclose(out, ref)                      # quantization is on
    assert torch.isfinite(out).all()
    save_quant_params(m, tmp_path / "p.safetensors")
    cfg_load = cfg_for(f"model={model}", f"quantizer={quantizer}", "bits=w4a4",
                       f"quantizer.load={tmp_path / 'p.safetensors'}")
    quantize_model(fresh, resolve_ptq_config(cfg_load), x, y, progress=False)
    assert torch.equal(fresh(x), out)                        # reloaded without recalibrating
    set_quant_enabled(m, False)
    assert (m(x) - ref).abs().max().item() <= 1e-5


def test_sequential_mode_runs_and_differs_from_parallel():
    outs = {}
    for mode in ("parallel", "sequential"):
        cfg = cfg_for("quantizer=base_ptq", "bits=w4a4", f"calib.mode={mode}", "metric=mse")
        m, x, y = _model_and_data(cfg)
        quantize_model(m, resolve_ptq_config(cfg), x, y, progress=False)
        outs[mode] = m(x).detach()
    assert not torch.equal(outs["parallel"], outs["sequential"])


def _g2_scale(grad: str) -> float:
    cfg = cfg_for(f"metric.grad={grad}")
    pcfg = resolve_ptq_config(cfg)
    m, x, y = _model_and_data(cfg)
    ops = wrap_model(m, pcfg)
    cal = Calibrator(m, ops, pcfg, x, y, torch.device("cpu"))
    cal.observe()
    caps = cal.capture_layers(["blocks.0.attn.qkv", "blocks.1.attn.matmul1", "blocks.3.mlp.fc2", "head"], set())
    return min(c["g2"].abs().max().item() for c in caps.values())  # the weakest layer: every layer must get one


def test_gradient_sources():
    assert "hessian" in NEEDS_GRAD
    scales = {g: _g2_scale(g) for g in ("kl_self", "kl_quant", "pseudo_ce", "label_ce", "fisher")}
    # kl_self at the float model: the true gradient is zero, what remains is round-off (spec section 4)
    assert scales["kl_self"] < 1e-8
    for g in ("kl_quant", "pseudo_ce", "label_ce", "fisher"):  # kl_quant needs the straight-through estimator
        assert scales[g] > 1e3 * max(scales["kl_self"], 1e-20), (g, scales)


def test_official_compat_switches_every_quirk():
    p = resolve_ptq_config(cfg_for("quantizer.compat=official"))
    assert (p.softmax_form, p.gelu_form, p.grad, p.search.include_beta, p.search.split_v) == (
        "official", "official", "kl_self", False, "float")
    p = resolve_ptq_config(cfg_for())
    assert (p.softmax_form, p.gelu_form, p.search.include_beta, p.search.split_v) == (
        "paper", "paper", True, "quantized")
    assert p.grad != "kl_self"
    p = resolve_ptq_config(cfg_for("quantizer.twin_softmax=false", "quantizer.twin_gelu=false"))
    assert (p.softmax_quantizer, p.gelu_quantizer) == ("uniform", "uniform")


def test_presets():
    base = resolve_ptq_config(cfg_for("quantizer=base_ptq"))
    assert (base.metric, base.search.alpha, base.search.beta, base.conv_granularity) == ("cosine", 0.5, 1.2, "tensor")
    ptq4 = resolve_ptq_config(cfg_for("quantizer=ptq4vit"))
    assert (ptq4.metric, ptq4.search.alpha, ptq4.conv_granularity, ptq4.softmax_quantizer) == (
        "hessian", 0.01, "channel", "twin_softmax")


def test_user_added_quantizer_runs_end_to_end():
    """The worked example of the README: ptq/quantizers/log2.py + conf/quantizer/ptq4vit_log2.yaml."""
    cfg = cfg_for("quantizer=ptq4vit_log2", "metric=mse")
    m, x, y = _model_and_data(cfg)
    quantize_model(m, resolve_ptq_config(cfg), x, y, progress=False)
    kinds = {type(mod.a_quantizer).kind for mod in m.modules() if isinstance(mod, QMatMul)}
    assert "log2" in kinds and torch.isfinite(m(x)).all()
