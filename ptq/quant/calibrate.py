"""The calibrator: holds the calibration batch and runs the passes over the wrapped model that the recipe stages
ask for (ptq/quant/stages/): min-max observation, and captures of layers' float operands, outputs and, for the
Hessian metric, the squared loss gradient at their outputs (ptq/quant/gradients.py). The engine below the stages;
the entry point is ptq/quant/recipe.py (`quantize_model`)."""
from __future__ import annotations

import torch
from torch import nn

from ptq.metrics import NEEDS_GRAD
from ptq.quant.calib_report import CalibReport
from ptq.quant.gradients import backward_losses, gradient_reads
from ptq.quant.method import PTQConfig
from ptq.quant.modules import QuantOp

# The config keys a capture reads (`capture_layers`): the layer order of the mode, the capture budget, the batches,
# the metric and, for a metric that needs one, its gradient. Stages that capture declare them (ptq/quant/stage.py).
CAPTURE_READS = ("calib.mode", "calib.capture_mb", "calib.batch_size", "metric.name", gradient_reads)


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
                    draws = self.pcfg.fisher_draws if grads == "fisher" else 1   # read where it counts
                    n = backward_losses(grads, logits, self.fp_logits[i:i + len(xb)], self.y[i:i + len(xb)],
                                        draws, self.generator)
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
        source = self.pcfg.grad if need_grad else None   # read only where a gradient is computed (CAPTURE_READS)
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


__all__ = ["Calibrator", "CalibReport", "CAPTURE_READS"]
