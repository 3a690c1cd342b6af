"""`quantize_model`: wrap a float timm model, calibrate every quantizer on the calibration batch, enable them.

Pipeline (spec section 5):
1. wrap the model (ptq.quant.wrap) and initialize every quantizer with min-max parameters (one float pass);
2. capture, per group of layers bounded by `capture_mb`, each layer's float operands, float output and, for the
   Hessian metric, the squared loss gradient at its output -- once, reused by every round;
   parallel mode: every layer sees float inputs; sequential mode: a layer sees the outputs of the already
   quantized layers before it (one capture per layer);
3. search each layer (ptq.quant.search) in module order, with a log line per layer;
4. enable all quantizers.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from ptq.metrics import NEEDS_GRAD, get_metric
from ptq.quant.config import PTQConfig
from ptq.quant.gradients import backward_losses
from ptq.quant.modules import QuantOp
from ptq.quant.search import OpResult, search_op
from ptq.quant.wrap import quant_ops, set_quant_enabled, wrap_model

log = logging.getLogger("ptq.calib")


@dataclass
class CalibReport:
    layers: list[OpResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    passes: int = 0

    def summary(self) -> dict:
        return {"layers": len(self.layers), "capture_passes": self.passes,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "search_seconds_per_layer": {r.name: round(r.seconds, 3) for r in self.layers}}


class Calibrator:
    """Holds the calibration batch and runs the passes over the model."""

    def __init__(self, model: nn.Module, ops: dict[str, QuantOp], pcfg: PTQConfig, x: torch.Tensor,
                 y: torch.Tensor, device: torch.device):
        self.model, self.ops, self.pcfg = model, ops, pcfg
        self.x, self.y, self.device = x.to(device), y.to(device), device
        self.bs = max(1, pcfg.batch_size)
        self.passes = 0
        self.generator = torch.Generator().manual_seed(pcfg.seed)
        with torch.no_grad():
            self.fp_logits = torch.cat([model(self.x[i:i + self.bs]) for i in range(0, len(self.x), self.bs)])

    def _batches(self):
        for i in range(0, len(self.x), self.bs):
            xb = self.x[i:i + self.bs]
            for op in self.ops.values():
                op.images = len(xb)
            yield i, xb

    def observe(self) -> None:
        """Min-max initialization of all quantizers (activations from one float pass, weights directly)."""
        for op in self.ops.values():
            op.observing = True
        with torch.no_grad():
            for _, xb in self._batches():
                self.model(xb)
        for op in self.ops.values():
            op.observing = False
            for operand, q in op.quantizers().items():
                if operand == "weight":
                    q.initialize(op.weight)
                else:
                    q.init_from_stats()
        self.passes += 1

    def capture(self, names: list[str], values: bool, grads: str | None) -> dict[str, dict[str, torch.Tensor]]:
        """One pass over the calibration batch storing operands/outputs (values) and/or g^2 (grads: a source)."""
        group = [self.ops[n] for n in names]
        for op in group:
            op.capturing, op.capture_grad = values, grads is not None
        try:
            for i, xb in self._batches():
                if grads is None:
                    with torch.no_grad():
                        self.model(xb)
                    continue
                with torch.enable_grad():
                    logits = self.model(xb.detach().requires_grad_(True))
                    n = backward_losses(grads, logits, self.fp_logits[i:i + len(xb)], self.y[i:i + len(xb)],
                                        self.pcfg.fisher_draws, self.generator)
                for op in group:
                    op.end_batch(1.0 / n)
        finally:
            for op in group:
                op.capturing = op.capture_grad = False
        self.passes += 1
        return {n: self.ops[n].take() for n in names}

    def capture_layers(self, names: list[str], enabled_before: set[str]) -> dict[str, dict[str, torch.Tensor]]:
        """Operands, outputs and g^2 of `names`: ops in `enabled_before` quantized, the others float."""
        need_grad = self.pcfg.metric in NEEDS_GRAD
        source = self.pcfg.grad
        for n, op in self.ops.items():
            op.set_enabled(n in enabled_before)
        if need_grad and source != "kl_quant":
            return self.capture(names, True, source)
        caps = self.capture(names, True, None)
        if need_grad:  # kl_quant: the gradient of the model quantized with its initial parameters
            for n, op in self.ops.items():
                op.set_enabled(True)
            grads = self.capture(names, False, source)
            for n in names:
                caps[n]["g2"] = grads[n]["g2"]
        return caps

    def bytes_per_image(self) -> dict[str, int]:
        """Captured bytes per calibration image and layer, from a one-image dry run."""
        for op in self.ops.values():
            op.capturing, op.images = True, 1
        with torch.no_grad():
            self.model(self.x[:1])
        sizes = {}
        for n, op in self.ops.items():
            op.capturing = False
            cap = op.take()
            sizes[n] = sum(t.numel() * t.element_size() for t in cap.values()) + cap["out"].numel() * 4
        return sizes


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


def calibrate(model: nn.Module, ops: dict[str, QuantOp], pcfg: PTQConfig, x: torch.Tensor, y: torch.Tensor,
              device: torch.device, progress: bool = True) -> CalibReport:
    report = CalibReport()
    metric = get_metric(pcfg.metric)
    if pcfg.chunk_mb is None:  # cache-sized chunks on CPU; few, large kernels on GPU
        pcfg = dataclasses.replace(pcfg, chunk_mb=1024.0 if device.type == "cuda" else 8.0)
    t0 = time.time()
    cal = Calibrator(model, ops, pcfg, x, y, device)
    cal.observe()
    report.seconds["init"] = time.time() - t0
    names = list(ops)
    done: set[str] = set()
    bar = tqdm(total=len(names), desc=f"calibrate {pcfg.name} W{pcfg.w_bits}A{pcfg.a_bits}", unit="layer",
               disable=not progress, leave=False)
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
            op, cap = ops[n], caps.pop(n)
            if pcfg.mode == "sequential":  # the inputs changed with the quantized layers before: re-initialize
                for operand, q in op.quantizers().items():
                    if operand != "weight":
                        q.initialize(cap[operand])
            res = search_op(n, op, cap, metric, pcfg)
            del cap
            report.layers.append(res)
            done.add(n)
            t_search += time.time() - t1
            log.info("[%d/%d] %s  %s  (%.2fs)", len(done), len(names), n, _describe(op), res.seconds)
            bar.update(1)
    bar.close()
    set_quant_enabled(model, True)
    report.passes = cal.passes
    report.seconds.update(capture=t_capture, search=t_search, total=time.time() - t0)
    return report


def quantize_model(model: nn.Module, pcfg: PTQConfig, calib_x: torch.Tensor, calib_y: torch.Tensor,
                   device: torch.device | str = "cpu", progress: bool = True) -> CalibReport:
    """Quantize `model` in place with the method `pcfg`, calibrated on (calib_x, calib_y); returns a report.
    With `pcfg.load` set, the saved parameters are loaded instead of calibrating."""
    device = torch.device(device)
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    ops = wrap_model(model, pcfg)
    model.to(device)
    if pcfg.load:
        from ptq.quant.params import load_quant_params

        load_quant_params(model, pcfg.load)
        return CalibReport(seconds={"total": 0.0})
    return calibrate(model, ops, pcfg, calib_x, calib_y, device, progress)


__all__ = ["quantize_model", "calibrate", "CalibReport", "quant_ops"]
