"""`quantize_model`: wrap a float timm model, run the method's recipe on the calibration batch, enable the
quantizers.

The recipe (`quantizer.recipe`, stages in ptq/quant/recipe.py) of BasePTQ and PTQ4ViT (spec section 5):
1. `init_minmax`: initialize every quantizer with min-max parameters (one float pass);
2. `search`: capture, per group of layers bounded by `capture_mb`, each layer's float operands, float output and,
   for the Hessian metric, the squared loss gradient at its output -- once, reused by every round; parallel mode:
   every layer sees float inputs; sequential mode: a layer sees the outputs of the already quantized layers before
   it (one capture per layer); then search each layer (ptq.quant.search) in module order, a log line per layer;
then every quantizer is enabled (finalize).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ptq.metrics import NEEDS_GRAD
from ptq.quant.config import PTQConfig
from ptq.quant.gradients import backward_losses
from ptq.quant.modules import QuantOp
from ptq.quant.search import OpResult
from ptq.quant.wrap import quant_ops, wrap_model


@dataclass
class CalibReport:
    layers: list[OpResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    passes: int = 0
    stages: list[str] = field(default_factory=list)
    reconstruction: dict = field(default_factory=dict)   # the `reconstruct` stage's per-unit rows (ptq/recon/)
    compensation: dict = field(default_factory=dict)     # the `compensate` stage's per-block rows (ptq/compensate/)

    def records(self) -> list[dict]:
        """One row per searched operand (its last round): layer, operand, quantizer, chosen parameter (compact),
        score, the layer's search seconds; what W&B shows as the calibration table."""
        rows = []
        for layer in self.layers:
            last = {s.operand: s for s in layer.steps}
            for s in last.values():
                p = s.param
                param = [round(v, 6) for v in p] if len(p) <= 4 else {
                    "min": round(min(p), 6), "mean": round(sum(p) / len(p), 6), "max": round(max(p), 6), "n": len(p)}
                rows.append({"layer": layer.name, "operand": s.operand, "quantizer": s.quantizer, "param": param,
                             "score": s.score, "candidates": s.n_candidates, "seconds": round(layer.seconds, 3)})
        return rows

    def summary(self) -> dict:
        return {"layers": len(self.layers), "capture_passes": self.passes, "stages": self.stages,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "search_seconds_per_layer": {r.name: round(r.seconds, 3) for r in self.layers},
                "records": self.records(), **({"reconstruction": self.reconstruction} if self.reconstruction else {}),
                **({"compensation": self.compensation} if self.compensation else {})}


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
            for op in self.ops.values():
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
        from ptq.quant.params import load_quant_params

        load_quant_params(model, pcfg.load, compensate=pcfg.compensate.name)
        return CalibReport(seconds={"total": 0.0})
    from ptq.quant.recipe import run_recipe

    return run_recipe(model, ops, pcfg, calib_x, calib_y, device, progress, recon_data, comp_data)


__all__ = ["quantize_model", "CalibReport", "Calibrator", "quant_ops"]
