"""Operand slots: where each configurable operand sits in a ViT / DeiT / Swin, its parent slot and the scale-group
layouts it supports.

A method names, per slot, the quantizer, the granularity, bits and options (`quantizer.slots.<slot>`, schema in
ptq/schema.py). A child slot that is not enabled falls back to its parent (`softmax` -> `matmul`, `gelu` ->
`input`, ...), so an ablation switches a special operand off without restating the generic one. `wrap.py` asks
this module which slot an operand belongs to; nothing in the core tests a quantizer's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ptq.quantizers import Layout


@dataclass(frozen=True)
class SlotKind:
    """A slot of the vocabulary: its parent (None for a root), the operand role it quantizes and what it holds."""

    parent: str | None
    role: str                        # linear_weight | linear_input | conv_weight | image | matmul
    where: str

    @property
    def weight(self) -> bool:
        return self.role.endswith("weight")


SLOTS: dict[str, SlotKind] = {
    "weight": SlotKind(None, "linear_weight", "every linear's weight"),
    "qkv_weight": SlotKind("weight", "linear_weight", "attn.qkv's weight"),
    "head_weight": SlotKind("weight", "linear_weight", "the classifier head's weight"),
    "conv_weight": SlotKind("weight", "conv_weight", "the patch-embedding conv's weight"),
    "input": SlotKind(None, "linear_input", "every linear's input"),
    "ln_input": SlotKind("input", "linear_input", "inputs after a LayerNorm: qkv, fc1, Swin's patch-merging reduction"),
    "gelu": SlotKind("input", "linear_input", "fc2's input (post-GELU)"),
    "head_input": SlotKind("input", "linear_input", "the classifier head's input"),
    "image": SlotKind(None, "image", "the image entering the patch embedding"),
    "matmul": SlotKind(None, "matmul", "q and k of q @ k^T, v of attn @ v"),
    "softmax": SlotKind("matmul", "matmul", "the attention probabilities of attn @ v (post-softmax)"),
}

# granularity -> layout, per role; `size` is the operand's extent along the grouped axis (out rows, channels, heads)
GRANULARITIES: dict[str, tuple[str, ...]] = {
    "linear_weight": ("tensor", "channel", "block"),
    "conv_weight": ("tensor", "channel"),
    "linear_input": ("tensor", "channel"),
    "image": ("tensor", "channel"),
    "matmul": ("tensor", "head"),
}


def layout_for(role: str, granularity: str, size: int) -> Layout:
    """The scale-group layout of an operand of `role` at `granularity`: `size` is the number of output rows (linear
    weight, block = 3 contiguous q/k/v blocks), output channels (conv weight), input features (linear input),
    image channels or heads (matmul operands [..., heads, tokens, dim])."""
    if granularity == "tensor":
        return Layout()
    axis = {"linear_weight": -2, "conv_weight": -4, "linear_input": -1, "image": -3, "matmul": -3}[role]
    return Layout(axis, size, 3 if granularity == "block" else size)


@dataclass
class SlotSpec:
    """A resolved slot: what `wrap` builds for an operand of this slot (recorded in results.json)."""

    slot: str                        # the slot that provides the spec (after fallback to parents)
    quantizer: str | None            # None: float
    granularity: str
    bits: int
    form: str
    partner: str
    options: dict[str, Any] = field(default_factory=dict)


def effective_slot(slot: str, enabled: dict[str, bool]) -> str:
    """The slot whose spec an operand of `slot` uses: itself when enabled, else the nearest enabled ancestor."""
    while not enabled.get(slot, True) and SLOTS[slot].parent is not None:
        slot = SLOTS[slot].parent
    return slot
