"""Reconstruction units of a wrapped model, in execution order.

`block`: the patch embedding, every transformer block (ViT/DeiT Block, SwinTransformerBlock), every Swin patch
merging and the classifier head -- each quantized op belongs to exactly one unit; an op outside these becomes its
own unit. `layer`: every quantized op (QLinear, QConv2d, QMatMul) alone.
"""
from __future__ import annotations

import torch
from timm.layers import PatchEmbed
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock
from timm.models.vision_transformer import Block
from torch import nn

from ptq.errors import PTQError, choices
from ptq.quant.modules import QuantOp

UNITS = ("block", "layer")
BLOCK_TYPES = (PatchEmbed, Block, SwinTransformerBlock, PatchMerging)


def _block_candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    get_head = getattr(model, "get_classifier", None)
    head = get_head() if get_head is not None else None
    found = []
    for name, mod in model.named_modules():
        if isinstance(mod, BLOCK_TYPES) or (head is not None and mod is head):
            if not any(name.startswith(f"{n}.") for n, _ in found):   # outermost only
                found.append((name, mod))
    return found


def find_units(model: nn.Module, unit: str, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """The units (name, module) holding quantized ops, ordered by when they run on `example` (one image)."""
    if unit not in UNITS:
        raise PTQError(f"unknown recon.unit={unit}; valid: {choices(UNITS)}")
    ops = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantOp)]
    if unit == "layer":
        units = ops
    else:
        units = [(n, m) for n, m in _block_candidates(model) if any(isinstance(x, QuantOp) for x in m.modules())]
        covered = {id(x) for _, m in units for x in m.modules()}
        units += [(n, m) for n, m in ops if id(m) not in covered]
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: order.append(n) if n not in order else None)
             for n, m in units]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    rank = {n: i for i, n in enumerate(order)}
    return sorted((u for u in units if u[0] in rank), key=lambda u: rank[u[0]])
