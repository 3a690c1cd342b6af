"""The stage interface and the stage registry: the bottom of a recipe (ptq/quant/recipe.py runs them).

A method is a sequence of named stages over the wrapped model (`quantizer.recipe`). A stage is a function
`stage(state: RecipeState) -> None` registered with `@register_stage("name", reads=(...))`; it may initialize
quantizers, transform the model (a function-preserving reparameterization), search parameters or reconstruct.

Each stage declares the config keys it reads (`reads`: dotted prefixes of the resolved config, e.g. "metric.name",
"quantizer.search", or a function of the config returning such prefixes, for reads that depend on other settings):
a job's identity for resume and sibling reuse in sweeps is its config restricted to what its stages (and the
engine, the quantizers' slots and the evaluation) read (ptq/job_identity.py), so a stage that reads a key it does
not declare lets a sweep reuse another job's results for it.

Flags: `transforms_model` (the stage changes the float model's weights, so a saved parameter file cannot restore
its calibration), `after_reconstruct` (the stage finishes a calibration and runs after every plug-in stage, e.g.
AdaLog's shift fold). A plug-in stage (`plugin=PlugIn(group, resolve)`) is appended to every method's recipe when
its config group's `name` is not `none`: block reconstruction (ptq/recon/) registers this way, from outside
ptq/quant; ptq/plugins.py imports the modules that register plug-ins.

This module imports nothing of ptq/quant above it: the engine (calibrate, search, wrap, params), the method
stages (ptq/quant/stages/) and the entry point (recipe.py) import it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ptq.quant.calib_report import CalibReport
from ptq.quant.method import PTQConfig
from ptq.quant.modules import QuantOp


class CalibrationPasses(Protocol):
    """What the stages use of the calibrator (ptq/quant/calibrate.py `Calibrator`): the calibration batch and its
    passes over the model."""

    x: torch.Tensor
    y: torch.Tensor
    passes: int

    def observe(self) -> None: ...

    def capture_layers(self, names: list[str], enabled_before: set[str]) -> dict[str, dict[str, torch.Tensor]]: ...

    def bytes_per_image(self) -> dict[str, int]: ...


@dataclass
class RecipeState:
    """What the stages share: the wrapped model, its quantized ops, the method, the calibration batch (held by the
    calibrator, which runs the passes) and the report every stage adds to."""

    model: nn.Module
    ops: dict[str, QuantOp]
    pcfg: PTQConfig
    calibrator: CalibrationPasses
    device: torch.device
    progress: bool = True
    report: CalibReport = field(default_factory=CalibReport)
    recon_data: tuple[torch.Tensor, torch.Tensor] | None = None   # images (and labels) of the `reconstruct` stage
    comp_data: tuple[torch.Tensor, torch.Tensor] | None = None    # images (and labels) of the `compensate` stage


Stage = Callable[[RecipeState], None]
# A declared read: a dotted key prefix of the resolved config, or a function of the config (a dict) returning them.
Read = str | Callable[[dict], Iterable[str]]


@dataclass(frozen=True)
class PlugIn:
    """A stage that joins every method's recipe when its config group is switched on (`<group>.name` is not
    `off`); `resolve` turns the group's config into the value of the `PTQConfig` field of the same name. Plug-ins
    run after the method's stages, in `order`, before the `after_reconstruct` stages; with `first` before the
    method's stages (a stage that changes the float model the calibration must see: MLP reconstruction)."""

    group: str
    resolve: Callable[[Any], Any]
    order: int = 0
    off: str = "none"
    check_recipe: Callable[[Any, list[str]], None] | None = None   # (resolved value, method's recipe): refuse orders
    reads_group: bool = True   # False: the stage's `reads` name which keys of its group it reads (not all of them)
    first: bool = False        # runs before the method's stages (in `order` among such plug-ins)


@dataclass(frozen=True)
class StageSpec:
    name: str
    fn: Stage
    reads: tuple[Read, ...] = ()
    transforms_model: bool = False
    after_reconstruct: bool = False
    plugin: PlugIn | None = None

    def read_keys(self, config: dict) -> list[str]:
        """The config key prefixes this stage reads in the job `config` (a resolved config as a dict)."""
        keys: list[str] = []
        for r in self.reads:
            keys.extend([r] if isinstance(r, str) else r(config))
        if self.plugin is not None and self.plugin.reads_group:
            keys.append(self.plugin.group)
        return keys


STAGES: dict[str, Stage] = {}
SPECS: dict[str, StageSpec] = {}
# stages that change the float model's weights (a reparameterization): their calibration cannot be restored from a
# saved parameter file alone, which holds quantizer parameters only
TRANSFORMING_STAGES: set[str] = set()
# stages that finish a calibration and must follow reconstruction (every plug-in) when there is one
AFTER_RECONSTRUCT: set[str] = set()


def register_stage(name: str, *, reads: Iterable[Read] = (), transforms_model: bool = False,
                   after_reconstruct: bool = False, plugin: PlugIn | None = None) -> Callable[[Stage], Stage]:
    """Register a recipe stage under `name`, with the config keys it reads and its flags (module docstring)."""
    def deco(fn: Stage) -> Stage:
        STAGES[name] = fn
        SPECS[name] = StageSpec(name, fn, tuple(reads), transforms_model, after_reconstruct, plugin)
        if transforms_model:
            TRANSFORMING_STAGES.add(name)
        if after_reconstruct:
            AFTER_RECONSTRUCT.add(name)
        return fn

    return deco


def plugins() -> list[StageSpec]:
    """The registered plug-in stages in the order they join a recipe."""
    found = [s for s in SPECS.values() if s.plugin is not None]
    return sorted(found, key=lambda s: (s.plugin.order, s.name))


def expand_recipe(recipe: Iterable[str], switch: Callable[[str], str | None]) -> list[str]:
    """The method's stages, then every plug-in stage whose group is on (`switch(group)`: the group's name), in
    plug-in order, placed before the stages that must follow them (registered with after_reconstruct); plug-ins
    registered with `first` go before the method's stages."""
    stages, front = list(recipe), []
    for spec in plugins():
        if switch(spec.plugin.group) not in (None, spec.plugin.off) and spec.name not in stages:
            if spec.plugin.first:
                front.append(spec.name)
                continue
            at = next((i for i, s in enumerate(stages) if s in AFTER_RECONSTRUCT), len(stages))
            stages.insert(at, spec.name)
    return front + stages
