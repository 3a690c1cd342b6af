"""RepQ-ViT's stages (SPEC-repq.md sections 4-5): the LayerNorm reparameterization is function-preserving, sets
D* = mean D_c and changes the input quantizer's layout; the calibration pass initializes each quantizer on the
first (quantized-upstream) tensor it sees; the affected weight quantizers re-initialize on the new weights."""
from __future__ import annotations

import copy

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from ptq.errors import PTQError
from ptq.models import build_model
from ptq.models.registry import PROJECT_ROOT
from ptq.quant import quantize_model, resolve_ptq_config, save_quant_params, set_quant_enabled, wrap_model
from ptq.quant.calibrate import Calibrator
from ptq.quant.modules import QLinear
from ptq.quant.params import load_quant_params
from ptq.quant.recipe import RecipeState
from ptq.quant.stages.repq import fold_channel_scales, init_quantized_pass, layernorm_linear_pairs, reparam_layernorm
from ptq.quantizers import QUANTIZERS, Layout
from ptq.quantizers.uniform_asym import percentile_fit


def cfg_for(*overrides: str):
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["quantizer=repq_vit", "calib.n_images=8", *overrides])


def calibrated_state(model: str, *overrides: str) -> tuple[RecipeState, torch.Tensor]:
    cfg = cfg_for(f"model={model}", *overrides)
    torch.manual_seed(0)
    m = build_model(cfg.model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    x = torch.randn(8, 1, 28, 28)
    pcfg = resolve_ptq_config(cfg)
    ops = wrap_model(m, pcfg)
    state = RecipeState(m, ops, pcfg, Calibrator(m, ops, pcfg, x, torch.zeros(8, dtype=torch.long), "cpu"),
                        torch.device("cpu"), progress=False)
    return state, x


def test_fold_is_function_preserving_by_hand():
    """One LayerNorm -> linear (no bias) pair with hand-picked (D_c, z_c): same output; the LN output becomes
    y / r - s with r = D_c / D*, s = m_c / r - m*; the linear gets the bias W_new @ s."""
    torch.manual_seed(1)
    norm, lin = nn.LayerNorm(3), nn.Linear(3, 2, bias=False)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    q = QLinear(lin, QUANTIZERS["uniform"](8, Layout()), None)   # quantizers off: the float layer
    x = torch.randn(5, 3, dtype=torch.float64)
    norm, q = norm.double(), q.double()
    y_before = norm(x).detach()
    out_before = q(norm(x)).detach()
    d, z = torch.tensor([0.1, 0.4, 0.25], dtype=torch.float64), torch.tensor([3.0, 8.0, 1.0], dtype=torch.float64)
    d_star, z_star = fold_channel_scales(norm, q, d, z)
    assert d_star.item() == pytest.approx(0.25) and z_star.item() == pytest.approx(4.0)
    r = torch.tensor([0.4, 1.6, 1.0], dtype=torch.float64)
    m_c, m_star = -z * d, -4.0 * 0.25                       # [-0.3, -3.2, -0.25], -1
    s = m_c / r - m_star                                    # [0.25, -1.0, 0.75]
    assert torch.allclose(norm(x), y_before / r - s)
    assert torch.allclose(q(norm(x)), out_before, rtol=1e-12, atol=1e-12)
    assert q.bias is not None and torch.allclose(q.bias, q.weight @ s)


@pytest.mark.parametrize("model", ["fmnist_vit", "fmnist_swin"])
def test_reparam_keeps_float_logits_and_sets_mean_scale(model):
    state, x = calibrated_state(model)
    init_quantized_pass(state)
    pairs = layernorm_linear_pairs(state.model)
    expected_pairs = {"fmnist_vit": 8, "fmnist_swin": 8 + 1}        # 4 blocks x 2 (+ 1 patch merging)
    assert len(pairs) == expected_pairs[model]
    before = {name: (lin.input_quantizer.param.clone(), lin.input_quantizer.zero_point.clone(),
                     lin.input_quantizer.layout.axis, lin.weight_quantizer.param.clone()) for name, _, lin in pairs}
    set_quant_enabled(state.model, False)
    ref = state.model(x)
    reparam_layernorm(state)
    set_quant_enabled(state.model, False)
    out = state.model(x)
    assert ((out - ref).abs().max() / ref.abs().max()).item() <= 1e-5
    for name, _, lin in pairs:
        d_c, z_c, axis, w_param = before[name]
        q = lin.input_quantizer
        assert axis == -1 and d_c.numel() == lin.in_features                   # per channel while calibrating
        assert q.layout.axis is None and q.layout.groups == 1                  # per tensor afterwards
        assert q.param.item() == pytest.approx(d_c.mean().item(), rel=1e-6)   # D* = mean D_c
        assert q.zero_point.item() == pytest.approx(z_c.mean().item(), rel=1e-6)
        # the weight quantizer re-initialized on the new (column-scaled) weight, per output row
        new_d, new_z = percentile_fit(lin.weight.detach(), lin.weight_quantizer.bits)
        assert torch.allclose(lin.weight_quantizer.param, new_d) and torch.equal(lin.weight_quantizer.zero_point,
                                                                                  new_z)
        assert not torch.allclose(w_param, new_d)


def test_calibration_pass_initializes_on_the_quantized_first_tensor():
    """A later layer's input quantizer is fitted on its input with every layer before it quantized (not on the
    float input), over the whole calibration batch in one pass."""
    state, x = calibrated_state("fmnist_vit")
    proj = state.ops["blocks.1.attn.proj"]
    seen = {}
    hook = proj.register_forward_pre_hook(lambda mod, args: seen.setdefault("float", args[0].clone()))
    with torch.no_grad():
        state.model(x)                                     # quantizers still off: the float input
    hook.remove()
    init_quantized_pass(state)
    hook = proj.register_forward_pre_hook(lambda mod, args: seen.setdefault("quant", args[0].clone()))
    with torch.no_grad():
        state.model(x)                                     # same parameters: the tensor of the calibration pass
    hook.remove()
    q = proj.input_quantizer
    d_q, z_q = percentile_fit(seen["quant"].reshape(1, -1), q.bits)
    d_f, _ = percentile_fit(seen["float"].reshape(1, -1), q.bits)
    assert q.param.item() == pytest.approx(d_q.item(), rel=1e-6) and q.zero_point.item() == z_q.item()
    assert q.param.item() != pytest.approx(d_f.item(), rel=1e-4)
    assert all(q.initialized for op in state.ops.values() for q in op.quantizers().values())


def test_preset_slots():
    pcfg = resolve_ptq_config(cfg_for("bits=w4a4"))
    s = pcfg.slots
    assert pcfg.recipe == ["init_quantized_pass", "reparam_layernorm"]
    for slot in ("weight", "qkv_weight", "head_weight", "conv_weight"):
        assert (s[slot].quantizer, s[slot].granularity, s[slot].bits) == ("uniform_asym", "channel", 4)
    assert (s["ln_input"].quantizer, s["ln_input"].granularity) == ("uniform_asym", "channel")
    for slot in ("input", "gelu", "head_input", "matmul"):
        assert (s[slot].quantizer, s[slot].granularity, s[slot].bits) == ("uniform_asym", "tensor", 4)
    assert (s["softmax"].quantizer, s["softmax"].granularity) == ("log_sqrt2", "tensor")
    assert (s["image"].quantizer, s["image"].bits) == ("uniform_asym", 8)
    official = resolve_ptq_config(cfg_for("quantizer.compat=official"))
    assert official.slots["softmax"].form == "official"


def test_bits_outside_2_to_8_refused():
    state, _ = calibrated_state("fmnist_vit", "bits.w=10")
    with pytest.raises(PTQError, match=r"weight has 10 bits; valid for this recipe: 2\.\.8"):
        init_quantized_pass(state)


def test_zero_points_survive_save_and_load(tmp_path):
    """Without the reparameterization (ln_input per tensor) a saved RepQ calibration loads into a fresh model
    and quantizes identically: zero points are restored with the scales."""
    cfg = cfg_for("model=fmnist_vit", "bits=w4a4", "quantizer.slots.ln_input.enabled=false")
    torch.manual_seed(0)
    m = build_model(cfg.model)
    fresh = copy.deepcopy(m)
    x = torch.randn(8, 1, 28, 28)
    quantize_model(m, resolve_ptq_config(cfg), x, torch.zeros(8, dtype=torch.long), progress=False)
    save_quant_params(m, tmp_path / "p.safetensors")
    wrap_model(fresh, resolve_ptq_config(cfg))
    load_quant_params(fresh, tmp_path / "p.safetensors")
    assert torch.equal(fresh(x), m(x))


def test_reparam_refuses_a_per_channel_quantizer_without_zero_point():
    state, _ = calibrated_state("fmnist_vit", "quantizer.slots.ln_input.quantizer=uniform")
    init_quantized_pass(state)
    with pytest.raises(PTQError, match="valid: ln_input quantizer uniform_asym"):
        reparam_layernorm(state)


def test_layout_registry_names():
    assert {"uniform_asym", "log_sqrt2"} <= set(QUANTIZERS)
    assert QUANTIZERS["uniform_asym"].searched is False and QUANTIZERS["log_sqrt2"].searched is False
    assert Layout().groups == 1


def test_load_refused_for_a_reparameterized_calibration(tmp_path):
    with pytest.raises(PTQError, match="stage reparam_layernorm changes the model's weights"):
        resolve_ptq_config(cfg_for(f"quantizer.load={tmp_path / 'p.safetensors'}"))


def test_ptq4vit_search_after_the_reparameterization():
    """ptq4vit_repq: the quantized init pass and the reparameterization, then PTQ4ViT's search of the searched
    quantizers; the reparameterized inputs keep their per-tensor (D*, z*)."""
    cfg = cfg_for("quantizer=ptq4vit_repq", "model=fmnist_vit", "bits=w4a4", "quantizer.search.n=4",
                  "quantizer.search.rounds=1", "metric=mse")
    torch.manual_seed(0)
    m = build_model(cfg.model)
    x = torch.randn(8, 1, 28, 28)
    pcfg = resolve_ptq_config(cfg)
    assert pcfg.recipe == ["init_quantized_pass", "reparam_layernorm", "search"]
    report = quantize_model(m, pcfg, x, torch.zeros(8, dtype=torch.long), progress=False)
    assert report.stages == pcfg.recipe and len(report.layers) > 0
    qkv = m.blocks[0].attn.qkv
    assert qkv.input_quantizer.kind == "uniform_asym" and qkv.input_quantizer.layout.groups == 1
    searched = {s.operand for layer in report.layers if layer.name == "blocks.0.attn.qkv" for s in layer.steps}
    assert searched == {"weight"}                       # the reparameterized input is not searched
    assert m.blocks[0].attn.matmul2.a_quantizer.kind == "twin_softmax"
    assert torch.isfinite(m(x)).all()
