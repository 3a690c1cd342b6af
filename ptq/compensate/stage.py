"""The `compensate` recipe stage: blocks in execution order, each fitted on the stream already quantized and
compensated up to it.

Per block: one pass of the compensation images through the model with its quantizers on (and the maps of the
blocks before it) captures the block's input x and its quantized output Y_q; the block alone, its quantizers off,
gives the float output Y_fp on that same x. The compensator fits its map on all tokens of all images; the map is
attached when its R^2 on the fitted rows is above `r2_gate`, else the block stays as it is. Blocks: ViT / DeiT
Block and SwinTransformerBlock (one map per Swin block; patch merging, patch embedding and head untouched).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.vision_transformer import Block
from torch import nn

from ptq.compensate.config import check_recipe, resolve_compensate, two_part_default
from ptq.compensate.registry import COMPENSATORS
from ptq.compensate.side import attach
from ptq.errors import PTQError
from ptq.quant.stage import PlugIn, register_stage
from ptq.quant.wrap import set_quant_enabled
from ptq.recon.capture import capture_unit
from ptq.recon.units import find_units

if TYPE_CHECKING:
    from ptq.quant.stage import RecipeState

log = logging.getLogger("ptq.compensate")

TWO_PART_KEYS = ("two_part", "two_part_percentile", "two_part_rows_per_column")


def _compensate_keys(config: dict) -> list[str]:
    """The compensate group's keys, but ERQ's two-part ones only where two-part weights are on (so a job with them
    off has the identity it had before they existed)."""
    comp = config.get("compensate") or {}
    on = comp.get("two_part")
    if on is None:
        on = two_part_default(comp.get("name"), comp.get("compat", "paper"))
    return [f"compensate.{k}" for k in comp if on or k not in TWO_PART_KEYS] or ["compensate"]


# the config keys this stage reads: its own group (the two-part keys where they act)
READS = (_compensate_keys,)
COMPENSATED_TYPES = (Block, SwinTransformerBlock)


def compensable_blocks(model: nn.Module, example: torch.Tensor, wanted: list[str]) -> list[tuple[str, nn.Module]]:
    """The transformer blocks in execution order, restricted to `wanted` (all, or names / indices in that order)."""
    blocks = [(n, m) for n, m in find_units(model, "block", example) if isinstance(m, COMPENSATED_TYPES)]
    if list(wanted) == ["all"]:
        return blocks
    names = [n for n, _ in blocks]
    picked = []
    for w in wanted:
        w = str(w)
        name = names[int(w)] if w.isdigit() and int(w) < len(names) else w
        if name not in names:
            raise PTQError(f"unknown compensate.blocks entry {w}; valid: all, {', '.join(names)} or "
                           f"0..{len(names) - 1}")
        picked.append(name)
    return [(n, m) for n, m in blocks if n in picked]


@torch.no_grad()
def _float_output(block: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    set_quant_enabled(block, False)
    try:
        return torch.cat([block(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        set_quant_enabled(block, True)


@register_stage("compensate", reads=READS, plugin=PlugIn("compensate", resolve_compensate, order=1,
                                                         check_recipe=check_recipe, reads_group=False))
def compensate(state: RecipeState) -> None:
    """The stage (see the module docstring); rows per block go to the report's `compensation`."""
    cc, model = state.pcfg.compensate, state.model
    data = getattr(state, "comp_data", None)
    if data is None:
        raise PTQError(f"compensate.name={cc.name} needs compensation images; valid: pass comp_data to "
                       f"quantize_model (run.py draws compensate.n_images train images)")
    done = getattr(model, "_ptq_after_reconstruct", None)
    if done:
        raise PTQError(f"compensate.name={cc.name} cannot run on a model whose stage {done} already ran; valid: "
                       f"compensate before {done}")
    t0 = time.time()
    comp = COMPENSATORS[cc.name]
    x_all = data[0].to(state.device)
    if comp.edits_weights:   # ERQ: layer by layer on the whole model, no side paths
        state.report.compensation = comp.compensate_model(model, x_all, cc)
        return
    set_quant_enabled(model, False)
    blocks = compensable_blocks(model, x_all[:1], cc.blocks)
    set_quant_enabled(model, True)
    rows, added_params, added_macs = [], 0, 0
    for name, block in blocks:
        t1 = time.time()
        set_quant_enabled(model, True)
        (x, *_), y_q, _ = capture_unit(model, block, x_all, cc.batch_size)
        y_fp = _float_output(block, x, cc.batch_size)
        tokens = x[..., 0].numel()
        fit = comp.fit(x.reshape(-1, x.shape[-1]), y_fp.reshape(-1, y_fp.shape[-1]), y_q.reshape(-1, y_q.shape[-1]),
                       cc)
        kept = fit.side is not None and fit.r2 > cc.r2_gate
        if kept:
            attach(block, fit.side.to(state.device))
            added_params += fit.params
            added_macs += fit.macs_per_token * (tokens // len(x_all))
        rows.append({"block": name, "r2": round(fit.r2, 6), "kept": kept, "params": fit.params if kept else 0,
                     "seconds": round(time.time() - t1, 3)})
        log.info("compensate %s: R^2 %.4f, %s (%.1fs)", name, fit.r2, "kept" if kept else "dropped",
                 rows[-1]["seconds"])
        del x, y_q, y_fp
    set_quant_enabled(model, True)
    state.report.compensation = {
        "name": cc.name, "compat": cc.compat, "images": len(x_all), "augmentation": cc.augmentation,
        "ridge": cc.ridge, "solver": cc.solver, "precision": cc.precision, "blocks": rows,
        "kept": sum(r["kept"] for r in rows), "added_params": added_params, "added_macs_per_image": added_macs,
        "seconds": round(time.time() - t0, 3)}
