"""Methods as recipes: a method is a sequence of named stages over the wrapped model (`quantizer.recipe`).

A stage is a function `stage(state: RecipeState) -> None` registered with `@register_stage("name")`; it may
initialize quantizers, transform the model (a function-preserving reparameterization), search parameters or
reconstruct (`reconstruct`, ptq/recon/, appended to every method's recipe when recon.name is not none). After the
last stage every initialized quantizer is enabled (finalize). BasePTQ and PTQ4ViT (both
compat modes) are `[init_minmax, search]`; a new method registers its stages in its own module (imported from
`ptq/quant/stages/` or by the module that defines the method) and lists them in its YAML.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from ptq.metrics import get_metric
from ptq.quant.calibrate import Calibrator, CalibReport
from ptq.quant.config import PTQConfig
from ptq.quant.modules import QuantOp
from ptq.quant.search import search_op
from ptq.quant.wrap import set_quant_enabled

log = logging.getLogger("ptq.calib")


@dataclass
class RecipeState:
    """What the stages share: the wrapped model, its quantized ops, the method, the calibration batch (held by the
    calibrator, which runs the passes) and the report every stage adds to."""

    model: nn.Module
    ops: dict[str, QuantOp]
    pcfg: PTQConfig
    calibrator: Calibrator
    device: torch.device
    progress: bool = True
    report: CalibReport = field(default_factory=CalibReport)
    recon_data: tuple[torch.Tensor, torch.Tensor] | None = None   # images (and labels) of the `reconstruct` stage
    comp_data: tuple[torch.Tensor, torch.Tensor] | None = None    # images (and labels) of the `compensate` stage


Stage = Callable[[RecipeState], None]
STAGES: dict[str, Stage] = {}
# stages that change the float model's weights (a reparameterization): their calibration cannot be restored from a
# saved parameter file alone, which holds quantizer parameters only
TRANSFORMING_STAGES: set[str] = set()
# stages that finish a calibration and must follow reconstruction when there is one (AdaLog's shift fold)
AFTER_RECONSTRUCT: set[str] = set()


def register_stage(name: str, transforms_model: bool = False,
                   after_reconstruct: bool = False) -> Callable[[Stage], Stage]:
    def deco(fn: Stage) -> Stage:
        STAGES[name] = fn
        if transforms_model:
            TRANSFORMING_STAGES.add(name)
        if after_reconstruct:
            AFTER_RECONSTRUCT.add(name)
        return fn

    return deco


@register_stage("init_minmax")
def init_minmax(state: RecipeState) -> None:
    """Min-max initialization of every quantizer: weights directly, activations from one float pass."""
    state.calibrator.observe()


def _capture_groups(names: list[str], sizes: dict[str, int], n_images: int, budget_mb: float) -> list[list[str]]:
    groups, cur, cur_bytes = [], [], 0
    for n in names:
        b = sizes[n] * n_images
        if cur and cur_bytes + b > budget_mb * 2**20:
            groups.append(cur)
            cur, cur_bytes = [], 0
        cur.append(n)
        cur_bytes += b
    return groups + ([cur] if cur else [])


def _describe(op: QuantOp) -> str:
    parts = []
    for operand, q in op.quantizers().items():
        p = q.param
        v = f"{p.item():.4g}" if p.numel() == 1 else f"[{p.min().item():.3g}..{p.max().item():.3g}]x{p.numel()}"
        parts.append(f"{operand}:{q.kind}={v}")
    return " ".join(parts)


def captured_layers(state: RecipeState) -> Iterator[tuple[str, QuantOp, dict[str, torch.Tensor]]]:
    """Each quantized op with its captured float operands, output (and g^2 for a gradient metric), in module order,
    captured in groups bounded by `capture_mb`; parallel mode: every layer sees float inputs, sequential mode: the
    layers before it quantized (one capture per layer). The caller searches the op before asking for the next; the
    report gets capture and search seconds, the log a line and the progress bar a step per layer."""
    pcfg, ops, cal, report = state.pcfg, state.ops, state.calibrator, state.report
    names = list(ops)
    done: set[str] = set()
    bar = tqdm(total=len(names), desc=f"calibrate {pcfg.name} W{pcfg.w_bits}A{pcfg.a_bits}", unit="layer",
               disable=not state.progress, leave=False)
    t_capture = t_search = 0.0
    if pcfg.mode == "parallel":
        groups = _capture_groups(names, cal.bytes_per_image(), len(cal.x), pcfg.capture_mb)
    else:
        groups = [[n] for n in names]
    for group in groups:
        t1 = time.time()
        caps = cal.capture_layers(group, done if pcfg.mode == "sequential" else set())
        t_capture += time.time() - t1
        for n in group:
            t1 = time.time()
            op = ops[n]
            n_layers = len(report.layers)
            yield n, op, caps.pop(n)
            done.add(n)
            t_search += time.time() - t1
            seconds = report.layers[-1].seconds if len(report.layers) > n_layers else 0.0
            log.info("[%d/%d] %s  %s  (%.2fs)", len(done), len(names), n, _describe(op), seconds)
            bar.update(1)
    bar.close()
    report.seconds.update(capture=t_capture, search=t_search)


@register_stage("search")
def search(state: RecipeState) -> None:
    """Capture each layer's operands, output (and g^2) once, then search its searched quantizers in module order
    (spec section 5); sequential mode captures each layer with the layers before it quantized."""
    pcfg = state.pcfg
    metric = get_metric(pcfg.metric)
    for n, op, cap in captured_layers(state):
        if pcfg.mode == "sequential":  # the inputs changed with the quantized layers before: re-initialize
            for operand, q in op.quantizers().items():
                if operand != "weight":
                    q.initialize(cap[operand])
        state.report.layers.append(search_op(n, op, cap, metric, pcfg))
        del cap


def recipe_stages(pcfg: PTQConfig) -> list[str]:
    """The method's stages, then `reconstruct` when reconstruction is configured (recon.name != none), placed
    before the stages that must follow it (registered with after_reconstruct)."""
    stages = list(pcfg.recipe)
    if pcfg.recon.name != "none" and "reconstruct" not in stages:
        at = next((i for i, s in enumerate(stages) if s in AFTER_RECONSTRUCT or s == "compensate"), len(stages))
        stages.insert(at, "reconstruct")
    if pcfg.compensate.name != "none" and "compensate" not in stages:   # after reconstruct, before fold_shift
        stages.insert(next((i for i, s in enumerate(stages) if s in AFTER_RECONSTRUCT), len(stages)), "compensate")
    return stages


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


def _import_stage_modules() -> None:
    import importlib
    import pkgutil

    import ptq.quant.stages as stages

    for module in pkgutil.iter_modules(stages.__path__):
        importlib.import_module(f"{stages.__name__}.{module.name}")


_import_stage_modules()
