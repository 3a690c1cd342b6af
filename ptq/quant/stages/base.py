"""The base stages of BasePTQ and PTQ4ViT (spec section 5), `quantizer.recipe: [init_minmax, search]`:
1. `init_minmax`: initialize every quantizer with min-max parameters (one float pass);
2. `search`: capture, per group of layers bounded by `capture_mb`, each layer's float operands, float output and,
   for the Hessian metric, the squared loss gradient at its output -- once, reused by every round; parallel mode:
   every layer sees float inputs; sequential mode: a layer sees the outputs of the already quantized layers before
   it (one capture per layer); then search each layer (ptq.quant.search) in module order, a log line per layer.
`captured_layers` is the capture loop other searching stages share (AdaLog's beam_search).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import torch
from tqdm import tqdm

from ptq.metrics import get_metric
from ptq.quant.calibrate import CAPTURE_READS
from ptq.quant.modules import QuantOp
from ptq.quant.search import search_op
from ptq.quant.stage import RecipeState, register_stage

log = logging.getLogger("ptq.calib")
# What a searching stage reads: the captures, the candidate grid and rounds, the chunk bound and the fast paths.
SEARCH_READS = CAPTURE_READS + ("quantizer.search", "calib.chunk_mb", "calib.fast_paths")


@register_stage("init_minmax", reads=("calib.batch_size",))
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


@register_stage("search", reads=SEARCH_READS)
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
