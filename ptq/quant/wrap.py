"""Turn a timm ViT / DeiT / Swin into a fake-quantized model (spec section 1), following a `PTQConfig`.

Every nn.Linear becomes a `QLinear`, the patch-embedding conv a `QConv2d`, and every attention block computes
q @ k^T and attn @ v through `QMatMul`s. Quantizers start disabled; `ptq.quant.calibrate` initializes, searches
and enables them.
"""
from __future__ import annotations

from collections import OrderedDict

from timm.layers import Attention, Mlp
from timm.models.swin_transformer import WindowAttention
from torch import nn

from ptq.errors import PTQError
from ptq.quant.attention import QuantViTAttention, QuantWindowAttention
from ptq.quant.config import PTQConfig
from ptq.quant.modules import QConv2d, QLinear, QMatMul, QuantOp
from ptq.quantizers import QUANTIZERS, Layout, Quantizer


def make_quantizer(kind: str, bits: int, layout: Layout, pcfg: PTQConfig) -> Quantizer:
    form = {"twin_softmax": pcfg.softmax_form, "twin_gelu": pcfg.gelu_form}.get(kind, pcfg.compat)
    return QUANTIZERS[kind](bits, layout, form=form, **pcfg.extra)


def _weight_layout(out_features: int, granularity: str, is_qkv: bool) -> Layout:
    if granularity == "channel":
        return Layout(-2, out_features, out_features)
    if granularity == "block" and is_qkv:
        return Layout(-2, out_features, 3)
    return Layout()


def _qlinear(linear: nn.Linear, pcfg: PTQConfig, is_qkv: bool = False, post_gelu: bool = False) -> QLinear:
    gran = (pcfg.qkv_granularity if is_qkv else pcfg.weight_granularity)
    wq = make_quantizer(pcfg.weight_quantizer, pcfg.w_bits, _weight_layout(linear.out_features, gran, is_qkv), pcfg)
    aq = make_quantizer(pcfg.gelu_quantizer if post_gelu else pcfg.act_quantizer, pcfg.a_bits, Layout(), pcfg)
    return QLinear(linear, wq, aq)


def _matmuls(heads: int, pcfg: PTQConfig) -> tuple[QMatMul, QMatMul]:
    def per_head(kind: str) -> Quantizer:
        return make_quantizer(kind, pcfg.a_bits, Layout(-3, heads, heads), pcfg)

    soft = pcfg.softmax_quantizer
    # the twin softmax quantizer has one split per layer (spec section 1); a uniform one, one scale per head
    soft_q = make_quantizer(soft, pcfg.a_bits, Layout(), pcfg) if soft == "twin_softmax" else per_head(soft)
    return (QMatMul(per_head(pcfg.act_quantizer), per_head(pcfg.act_quantizer), heads),
            QMatMul(soft_q, per_head(pcfg.act_quantizer), heads))


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def wrap_model(model: nn.Module, pcfg: PTQConfig) -> "OrderedDict[str, QuantOp]":
    """Replace float ops by quantized ones in place; returns the QuantOps by name in module order."""
    if any(isinstance(m, QuantOp) for m in model.modules()):
        raise PTQError("the model is already quantized; build a fresh model to quantize it again")
    for name, mod in list(model.named_modules()):
        if isinstance(mod, (Attention, WindowAttention)):
            m1, m2 = _matmuls(mod.num_heads, pcfg)
            cls = QuantViTAttention if isinstance(mod, Attention) else QuantWindowAttention
            _set(model, name, cls(mod, _qlinear(mod.qkv, pcfg, is_qkv=True), _qlinear(mod.proj, pcfg), m1, m2))
        elif isinstance(mod, Mlp) and isinstance(mod.act, nn.GELU):
            mod.fc2 = _qlinear(mod.fc2, pcfg, post_gelu=True)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear) and not isinstance(mod, QuantOp):
            _set(model, name, _qlinear(mod, pcfg))
        elif isinstance(mod, nn.Conv2d) and name.endswith("patch_embed.proj"):
            out = mod.out_channels
            layout = Layout(-4, out, out) if pcfg.conv_granularity == "channel" else Layout()
            iq = make_quantizer(pcfg.act_quantizer, pcfg.a_bits, Layout(), pcfg) if pcfg.quant_input_image else None
            _set(model, name, QConv2d(mod, make_quantizer(pcfg.weight_quantizer, pcfg.w_bits, layout, pcfg), iq))
    ops = OrderedDict((n, m) for n, m in model.named_modules() if isinstance(m, QuantOp))
    if not any(isinstance(m, QMatMul) for m in ops.values()):
        raise PTQError(f"no supported attention block found in {type(model).__name__}; valid: timm ViT/DeiT "
                       f"(timm.layers.Attention) and Swin (WindowAttention) models")
    return ops


def quant_ops(model: nn.Module) -> "OrderedDict[str, QuantOp]":
    return OrderedDict((n, m) for n, m in model.named_modules() if isinstance(m, QuantOp))


def set_quant_enabled(model: nn.Module, enabled: bool) -> None:
    for op in quant_ops(model).values():
        op.set_enabled(enabled)
