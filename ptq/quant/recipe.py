"""The entry point of ptq/quant: `quantize_model` wraps a float timm model and runs the method's recipe on the
calibration batch (`run_recipe`), then enables the quantizers.

A recipe is the method's stages (`quantizer.recipe`; the stage interface and registry: ptq/quant/stage.py; every
method's stages: ptq/quant/stages/, imported here), then the plug-in stages whose config group is on (block
reconstruction, `recon.name != none`, registered by ptq/recon/ and made known by ptq/plugins.py), placed before the
stages that must follow them (`after_reconstruct`, e.g. AdaLog's shift fold). After the last stage every
initialized quantizer is enabled (finalize). BasePTQ and PTQ4ViT (both compat modes) are `[init_minmax, search]`.

The stage interface names are re-exported here (`RecipeState`, `register_stage`, ...) for code that imported them
from this module; new code imports them from ptq.quant.stage.
"""
from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

import ptq.quant.stages  # noqa: F401  (every method's stages registers itself)
from ptq.quant.calib_report import CalibReport
from ptq.quant.calibrate import Calibrator
from ptq.quant.method import PTQConfig
from ptq.quant.modules import QuantOp
from ptq.quant.params import load_quant_params
from ptq.quant.stage import (
    AFTER_RECONSTRUCT,
    SPECS,
    STAGES,
    TRANSFORMING_STAGES,
    RecipeState,
    Stage,
    expand_recipe,
    plugins,
    register_stage,
)
from ptq.quant.stages.base import captured_layers, init_minmax, search
from ptq.quant.wrap import set_quant_enabled, wrap_model


def recipe_stages(pcfg: PTQConfig) -> list[str]:
    """The method's stages, then every plug-in stage whose group is on (e.g. `reconstruct` when recon.name is not
    none), placed before the stages that must follow them (registered with after_reconstruct)."""
    return expand_recipe(pcfg.recipe, lambda group: getattr(getattr(pcfg, group, None), "name", None))


def run_recipe(model: nn.Module, ops: dict[str, QuantOp], pcfg: PTQConfig, x: torch.Tensor, y: torch.Tensor,
               device: torch.device, progress: bool = True,
               recon_data: tuple[torch.Tensor, torch.Tensor] | None = None,
               comp_data: tuple[torch.Tensor, torch.Tensor] | None = None) -> CalibReport:
    """Run the method's stages in order on the calibration batch (x, y) (reconstruction on recon_data), then
    enable every quantizer."""
    if pcfg.chunk_mb is None:  # cache-sized chunks on CPU; few, large kernels on GPU
        pcfg = dataclasses.replace(pcfg, chunk_mb=1024.0 if device.type == "cuda" else 8.0)
    t0 = time.time()
    state = RecipeState(model, ops, pcfg, Calibrator(model, ops, pcfg, x, y, device), device, progress,
                        recon_data=recon_data, comp_data=comp_data)
    for name in recipe_stages(pcfg):
        t1 = time.time()
        STAGES[name](state)
        if name in AFTER_RECONSTRUCT:   # reconstruction must not run on this model again (ptq/recon/stage.py)
            model._ptq_after_reconstruct = name
        state.report.stages.append(name)
        state.report.seconds[f"stage_{name}"] = time.time() - t1
    set_quant_enabled(model, True)
    state.report.passes = state.calibrator.passes
    state.report.seconds["total"] = time.time() - t0
    return state.report


def quantize_model(model: nn.Module, pcfg: PTQConfig, calib_x: torch.Tensor, calib_y: torch.Tensor,
                   device: torch.device | str = "cpu", progress: bool = True,
                   recon_data: tuple[torch.Tensor, torch.Tensor] | None = None,
                   comp_data: tuple[torch.Tensor, torch.Tensor] | None = None) -> CalibReport:
    """Quantize `model` in place with the method `pcfg`, calibrated on (calib_x, calib_y), reconstructed on
    recon_data when `pcfg.recon` asks for it; returns a report.
    With `pcfg.load` set, the saved parameters are loaded instead of calibrating."""
    device = torch.device(device)
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    ops = wrap_model(model, pcfg)
    model.to(device)
    if pcfg.load:
        load_quant_params(model, pcfg.load, {s.plugin.group: getattr(pcfg, s.plugin.group).name for s in plugins()})
        return CalibReport(seconds={"total": 0.0})
    return run_recipe(model, ops, pcfg, calib_x, calib_y, device, progress, recon_data, comp_data)


__all__ = ["quantize_model", "run_recipe", "recipe_stages", "RecipeState", "Stage", "register_stage", "STAGES",
           "SPECS", "TRANSFORMING_STAGES", "AFTER_RECONSTRUCT", "captured_layers", "init_minmax", "search"]
