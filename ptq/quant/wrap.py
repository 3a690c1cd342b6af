"""Turn a timm ViT / DeiT / Swin into a fake-quantized model (spec section 1), following a `PTQConfig`.

Every nn.Linear becomes a `QLinear`, the patch-embedding conv a `QConv2d`, and every attention block computes
q @ k^T and attn @ v through `QMatMul`s. Each operand belongs to a slot (ptq/quant/slots.py), found from the
model's structure (attention qkv, Mlp fc1 / fc2 after GELU, patch merging, the classifier); the slot's resolved
spec names the quantizer, granularity, bits and options. Quantizers start disabled; the recipe's stages
(ptq/quant/stages/) initialize, search and enable them.

The wrap reads the operand slots (`slot_reads`): an enabled slot's every setting, of a disabled one only that it is
disabled (its operands take the parent slot's spec).
"""
from __future__ import annotations

from collections import OrderedDict

from timm.layers import Attention, Mlp
from timm.models.swin_transformer import PatchMerging, WindowAttention
from torch import nn

from ptq.errors import PTQError
from ptq.quant.attention import QuantViTAttention, QuantWindowAttention
from ptq.quant.method import PTQConfig
from ptq.quant.modules import QConv2d, QLinear, QMatMul, QuantOp
from ptq.quant.slots import SLOTS, layout_for
from ptq.quantizers import QUANTIZERS, Quantizer


def make_quantizer(pcfg: PTQConfig, slot: str, size: int) -> Quantizer | None:
    """The quantizer of an operand in `slot` whose grouped axis has `size` entries (None: the operand stays float)."""
    spec = pcfg.slots[slot]
    if spec.quantizer is None:
        return None
    layout = layout_for(SLOTS[slot].role, spec.granularity, size)
    q = QUANTIZERS[spec.quantizer](spec.bits, layout, form=spec.form, partner=spec.partner, **spec.options)
    q.slot = slot   # named by the deployability report (ptq/export/)
    return q


def _qlinear(linear: nn.Linear, pcfg: PTQConfig, weight_slot: str, input_slot: str) -> QLinear:
    return QLinear(linear, make_quantizer(pcfg, weight_slot, linear.out_features),
                   make_quantizer(pcfg, input_slot, linear.in_features))


def _matmuls(heads: int, pcfg: PTQConfig) -> tuple[QMatMul, QMatMul]:
    def q(slot: str) -> Quantizer | None:
        return make_quantizer(pcfg, slot, heads)

    return QMatMul(q("matmul"), q("matmul"), heads), QMatMul(q("softmax"), q("matmul"), heads)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def linear_slots(model: nn.Module) -> dict[str, tuple[str, str]]:
    """(weight slot, input slot) of every nn.Linear by module name, from the model's structure."""
    slots: dict[str, tuple[str, str]] = {}
    get_head = getattr(model, "get_classifier", None)
    head = get_head() if get_head is not None else None
    for name, mod in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(mod, (Attention, WindowAttention)):
            slots[f"{prefix}qkv"] = ("qkv_weight", "ln_input")
        elif isinstance(mod, Mlp):
            slots[f"{prefix}fc1"] = ("weight", "ln_input")
            if isinstance(mod.act, nn.GELU):
                slots[f"{prefix}fc2"] = ("weight", "gelu")
        elif isinstance(mod, PatchMerging):
            slots[f"{prefix}reduction"] = ("weight", "ln_input")
        elif isinstance(mod, nn.Linear) and mod is head:
            slots[name] = ("head_weight", "head_input")
    return slots


def wrap_model(model: nn.Module, pcfg: PTQConfig) -> OrderedDict[str, QuantOp]:
    """Replace float ops by quantized ones in place; returns the QuantOps by name in module order."""
    if any(isinstance(m, QuantOp) for m in model.modules()):
        raise PTQError("the model is already quantized; build a fresh model to quantize it again")
    slots = linear_slots(model)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, (Attention, WindowAttention)):
            m1, m2 = _matmuls(mod.num_heads, pcfg)
            cls = QuantViTAttention if isinstance(mod, Attention) else QuantWindowAttention
            prefix = f"{name}." if name else ""
            _set(model, name, cls(mod, _qlinear(mod.qkv, pcfg, *slots[f"{prefix}qkv"]),
                                  _qlinear(mod.proj, pcfg, "weight", "input"), m1, m2))
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear) and not isinstance(mod, QuantOp):
            _set(model, name, _qlinear(mod, pcfg, *slots.get(name, ("weight", "input"))))
        elif isinstance(mod, nn.Conv2d) and name.endswith("patch_embed.proj"):
            _set(model, name, QConv2d(mod, make_quantizer(pcfg, "conv_weight", mod.out_channels),
                                      make_quantizer(pcfg, "image", mod.in_channels)))
    ops = OrderedDict((n, m) for n, m in model.named_modules() if isinstance(m, QuantOp))
    if not any(isinstance(m, QMatMul) for m in ops.values()):
        raise PTQError(f"no supported attention block found in {type(model).__name__}; valid: timm ViT/DeiT "
                       f"(timm.layers.Attention) and Swin (WindowAttention) models")
    return ops


def quant_ops(model: nn.Module) -> OrderedDict[str, QuantOp]:
    return OrderedDict((n, m) for n, m in model.named_modules() if isinstance(m, QuantOp))


def set_quant_enabled(model: nn.Module, enabled: bool) -> None:
    for op in quant_ops(model).values():
        op.set_enabled(enabled)


def slot_reads(config: dict) -> list[str]:
    """The quantizer.slots keys that wrapping (and so the quantizers) reads in the job `config`: every setting of
    an enabled slot; of a disabled slot only `enabled` (its operands use the parent slot)."""
    slots = (config.get("quantizer") or {}).get("slots") or {}
    return [f"quantizer.slots.{name}" + (".enabled" if isinstance(s, dict) and s.get("enabled") is False else "")
            for name, s in slots.items()]
