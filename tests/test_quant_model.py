"""Quantized test-bed models end to end: float equivalence, calibration, gradient sources, save/load, presets."""
from __future__ import annotations

import copy
import re

import pytest
import torch
from hydra import compose, initialize_config_dir

from ptq.errors import PTQError
from ptq.metrics import NEEDS_GRAD
from ptq.models import build_model
from ptq.models.registry import PROJECT_ROOT
from ptq.quant import quant_ops, quantize_model, resolve_ptq_config, save_quant_params, set_quant_enabled, wrap_model
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
    sm, ge = p.slots["softmax"], p.slots["gelu"]
    assert (sm.form, ge.form, p.grad, p.search.include_beta, sm.partner) == (
        "official", "official", "kl_self", False, "float")
    assert p.slots["matmul"].partner == "quantized"  # only the twin softmax declares a float partner
    p = resolve_ptq_config(cfg_for())
    sm, ge = p.slots["softmax"], p.slots["gelu"]
    assert (sm.form, ge.form, p.search.include_beta, sm.partner) == ("paper", "paper", True, "quantized")
    assert p.grad != "kl_self"
    # each quirk has its own key, which wins over compat
    p = resolve_ptq_config(cfg_for("quantizer.compat=official", "quantizer.slots.softmax.form=paper",
                                   "quantizer.slots.softmax.partner=quantized", "quantizer.search.include_beta=true"))
    assert (p.slots["softmax"].form, p.slots["softmax"].partner, p.search.include_beta) == ("paper", "quantized", True)
    p = resolve_ptq_config(cfg_for("quantizer.slots.softmax.enabled=false", "quantizer.slots.gelu.enabled=false"))
    assert (p.slots["softmax"].quantizer, p.slots["softmax"].granularity, p.slots["softmax"].slot) == (
        "uniform", "head", "matmul")
    assert (p.slots["gelu"].quantizer, p.slots["gelu"].slot) == ("uniform", "input")


def test_presets():
    base = resolve_ptq_config(cfg_for("quantizer=base_ptq"))
    assert (base.metric, base.search.alpha, base.search.beta, base.slots["conv_weight"].granularity) == (
        "cosine", 0.5, 1.2, "tensor")
    assert base.slots["softmax"].quantizer == "uniform" and base.slots["gelu"].quantizer == "uniform"
    ptq4 = resolve_ptq_config(cfg_for("quantizer=ptq4vit"))
    assert (ptq4.metric, ptq4.search.alpha, ptq4.slots["conv_weight"].granularity, ptq4.slots["softmax"].quantizer) \
        == ("hessian", 0.01, "channel", "twin_softmax")
    log2 = resolve_ptq_config(cfg_for("quantizer=ptq4vit_log2"))  # inherits ptq4vit, changes one slot
    assert (log2.slots["softmax"].quantizer, log2.slots["softmax"].granularity) == ("log2", "head")
    assert {k: v for k, v in log2.to_dict().items() if k not in ("name", "slots")} == {
        k: v for k, v in ptq4.to_dict().items() if k not in ("name", "slots")}


@pytest.mark.parametrize("override,expected", [
    ("quantizer.slots.softmax.quantizer=nope", "quantizer.slots.softmax.quantizer=nope"),
    ("quantizer.slots.matmul.granularity=channel", "valid: head, tensor"),
    ("quantizer.slots.weight.enabled=false", "root slot"),
    ("+quantizer.slots.softmax.options.m_mx=3", "quantizer.slots.softmax.options.m_mx of quantizer twin_softmax; "
                                                "valid: m_max"),
    ("+quantizer.slots.gelu.options.m_max=3", "valid: (none)"),
    ("quantizer.slots.softmax.partner=half", "valid: float, quantized"),
    ("quantizer.slots.gelu.bits=1", "quantizer.slots.gelu.bits=1"),
    ("quantizer.recipe=[init_minmax,serch]",
     "valid: aphq_search, beam_search, compensate, fold_shift, init_minmax, init_quantized_pass, mlp_reconstruct, "
     "reconstruct, reparam_layernorm, reparam_layernorm_int, search"),
])
def test_bad_slot_settings_are_one_line_errors(override, expected):
    with pytest.raises(PTQError, match=re.escape(expected)):
        resolve_ptq_config(cfg_for(override))


def test_slot_options_reach_only_their_quantizer():
    cfg = cfg_for("+quantizer.slots.softmax.options.m_max=3")
    m, _, _ = _model_and_data(cfg)
    from ptq.quant.wrap import wrap_model

    ops = wrap_model(m, resolve_ptq_config(cfg))
    soft = [op.a_quantizer for n, op in ops.items() if n.endswith("matmul2")]
    assert soft and all(q.options == {"m_max": 3} for q in soft)
    assert all(q.options == {} for op in ops.values() for q in op.quantizers().values() if q.kind != "twin_softmax")


def test_per_channel_input_moves_all_channels_together():
    """Per-channel linear inputs: the output does not decompose by input channel, so the search scales every
    channel's min-max scale by one shared multiplier (docs/extending.md, "Granularity and the search")."""
    cfg = cfg_for("quantizer.slots.input.granularity=channel", "metric=mse", "quantizer.search.rounds=1")
    m, x, y = _model_and_data(cfg)
    quantize_model(m, resolve_ptq_config(cfg), x, y, progress=False)
    per_channel = []
    for name, op in quant_ops(m).items():
        q = getattr(op, "input_quantizer", None)
        if q is not None and q.layout.groups > 1:
            ratio = q.param / q.initial
            assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5), name
            assert q.layout.groups == op.in_features
            per_channel.append(name)
    assert len(per_channel) == 4 * 3 + 1  # qkv, proj, fc1 per block + head (fc2's post-GELU slot stays twin)


@pytest.mark.parametrize("other,expected", [
    ("quantizer.slots.weight.granularity=channel", "groups 1 (this run: 96)"),
    ("quantizer=base_ptq", "patch_embed.proj.weight was saved with groups 96 (this run: 1)"),
    ("quantizer.slots.softmax.enabled=false", "matmul2.a was saved with kind twin_softmax (this run: uniform)"),
    ("bits=w4a4", "bits 6 (this run: 4)"),
])
def test_loading_parameters_into_another_method_is_refused(tmp_path, other, expected):
    """Saved parameters load only into the same quantizers: kind, bits, form, groups and axis are checked."""
    cfg = cfg_for()
    m, x, y = _model_and_data(cfg)
    quantize_model(m, resolve_ptq_config(cfg), x, y, progress=False)
    save_quant_params(m, tmp_path / "p.safetensors")
    cfg_load = cfg_for(other, f"quantizer.load={tmp_path / 'p.safetensors'}")
    fresh, _, _ = _model_and_data(cfg_load)
    with pytest.raises(PTQError, match=re.escape(expected)):
        quantize_model(fresh, resolve_ptq_config(cfg_load), x, y, progress=False)


def test_user_added_quantizer_runs_end_to_end():
    """The worked example of the README: ptq/quantizers/log2.py + conf/quantizer/ptq4vit_log2.yaml."""
    cfg = cfg_for("quantizer=ptq4vit_log2", "metric=mse")
    m, x, y = _model_and_data(cfg)
    quantize_model(m, resolve_ptq_config(cfg), x, y, progress=False)
    kinds = {type(mod.a_quantizer).kind for mod in m.modules() if isinstance(mod, QMatMul)}
    assert "log2" in kinds and torch.isfinite(m(x)).all()
