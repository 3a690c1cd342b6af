"""ERQ (Zhong et al., ICML 2024 / TPAMI 2025) as a compensator: it edits each quantized linear layer's float weights
and hardens its weight rounding instead of adding a side path (ptq/compensate/SPEC.md, section ERQ).

Layers in execution order (every QLinear / QConv2d whose weight quantizer is on). Per layer, on the rows of
its input x as the quantized layer sees them, xq = Q_a(x):
1. the ridge update of its float weights toward the float layer's output (ptq/compensate/erq_steps.py), lambda
   0.1 * coe for a token input, head_lambda for a pooled one (the head); skipped for the patch embedding; then the
   weight quantizer is initialized again on the new weights (`reinitialize`);
2. the quantization by halves with the rounding refinement (not for a convolution: nearest rounding there, as the
   released code), its lambda 0.1 * coe (official: for every layer, the head too, as released; paper: the head
   keeps head_lambda), the patch embedding conv_lambda; the rounding decisions are hardened into the weight
   quantizer (`rounding`, as reconstruction hardens AdaRound) and the weights / biases at quantization time kept
   as the layer's parameters.
Inputs: `official` (the released code) each layer's input from the float model (every quantizer off), captured
once; `paper` the propagated stream, each layer's input captured from the model with every quantizer on and the
layers before it already done. The target is always the float layer on the float model's input.
"""
from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from ptq.compensate.erq_steps import quantize_by_halves, ridge_update
from ptq.compensate.registry import Compensator, Fit, register_compensator
from ptq.compensate.side import EDITED
from ptq.compensate.two_part import TwoPartQuantizer, outlier_columns
from ptq.errors import PTQError
from ptq.quant.modules import QConv2d, QLinear, QuantOp
from ptq.quant.wrap import quant_ops, set_quant_enabled
from ptq.quantizers import Quantizer
from ptq.recon.capture import capture_unit
from ptq.schema import CompensateConfig

log = logging.getLogger("ptq.compensate")
PATCH_EMBED = "patch_embed"   # the released code skips step 1 for the patch embedding ('embed' in its name)
TWO_PART_LAYERS = ("qkv", "fc1")   # the released code's two-part weights ('qkv' or 'fc1' in the name)


def erq_layers(model: nn.Module) -> list[tuple[str, QuantOp]]:
    """Linears and convolutions whose weight quantizer is on, in execution order (the calibrator's order,
    module order where it was not recorded)."""
    ops = [(n, op) for n, op in quant_ops(model).items() if isinstance(op, (QLinear, QConv2d))
           and op.weight_quantizer is not None and op.weight_quantizer.enabled]
    return sorted(ops, key=lambda item: item[1].order) if all(op.order >= 0 for _, op in ops) else ops


def _rows(op: QuantOp, x: torch.Tensor) -> torch.Tensor:
    """The input rows (N, d) the layer's weight matrix multiplies: tokens of a linear, im2col patches of a conv."""
    if isinstance(op, QConv2d):
        kernel = op.weight.shape[2:]
        cols = F.unfold(x, kernel, dilation=op.dilation, padding=op.padding, stride=op.stride)  # (B, C k k, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def _float_out(op: QuantOp, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    if isinstance(op, QConv2d):
        out = F.conv2d(x, w, b, op.stride, op.padding, op.dilation, op.groups)
        return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])
    return F.linear(x, w, b).reshape(-1, w.shape[0])


def _quantized_input(op: QuantOp, x: torch.Tensor) -> torch.Tensor:
    q = op.input_quantizer
    return q.fake(x, q.param) if q is not None and q.enabled else x


def rounding_choices(q: Quantizer, shape: torch.Size):
    """The weight quantizer's floor / ceil values and nearest decision for a weight matrix (m, d) of a layer whose
    weight has `shape` (ceil = floor where w / scale is an integer, as torch.ceil)."""
    def choices(w2: torch.Tensor):
        w = w2.reshape(shape)
        frac, up = q.floor_frac(w)
        v_floor = q.soft_fake(w, torch.zeros_like(w))
        v_ceil = q.soft_fake(w, (frac > 0).to(w))
        return v_floor.reshape(w2.shape), v_ceil.reshape(w2.shape), up.reshape(w2.shape) > 0.5
    return choices


def _search_multiplier(q: Quantizer) -> torch.Tensor | None:
    """param / initial of a one-value-per-group parameter the method searched (None otherwise)."""
    if q.searched and q.param.ndim == 1 and getattr(q, "initial", None) is not None:
        return q.param / q.initial
    return None


def _initialize(q: Quantizer, w: torch.Tensor, multiplier: torch.Tensor | None) -> None:
    q.initialize(w)
    if multiplier is not None:
        q.set_param(q.param * multiplier)


@torch.no_grad()
def reinitialize(q: Quantizer, w_new: torch.Tensor) -> None:
    """The weight quantizer initialized again on the new weights by its own initialization (`initialize`: min-max
    for uniform / uniform_grid, the percentile fit for uniform_asym: RepQ-ViT's, the released code's base). A
    one-value-per-group parameter the method searched keeps the search's multiplier of that initialization
    (param / initial, e.g. PTQ4ViT's and BasePTQ's scale grid); a [G, K] parameter (AdaLog's scale and zero point)
    takes the initialization alone (its search is not re-run)."""
    _initialize(q, w_new, _search_multiplier(q))


@torch.no_grad()
def split_two_part(q: Quantizer, w_new: torch.Tensor, percentile: float, rows_per_column: int) -> Quantizer:
    """`reinitialize` with ERQ's two-part weights (ptq/compensate/two_part.py): the outlier columns of w_new get a
    second quantizer; each part is initialized on its own columns (a searched multiplier applies to both). Without
    any outlier column chosen (a layer of fewer than rows_per_column rows) the quantizer is reinitialized alone."""
    columns = outlier_columns(w_new, percentile, rows_per_column)
    if not len(columns):
        reinitialize(q, w_new)
        return q
    multiplier = _search_multiplier(q)
    two = TwoPartQuantizer(q, columns)
    w_outer, w_inner = two.parts(w_new)
    _initialize(two.outer, w_outer, multiplier)
    _initialize(two.inner, w_inner, multiplier)
    two.initialized = True
    return two


def two_part_layer(name: str, op: QuantOp) -> bool:
    """The layers the released code gives two-part weights: the linears named qkv or fc1."""
    return isinstance(op, QLinear) and name.rsplit(".", 1)[-1] in TWO_PART_LAYERS


def _check(op_name: str, op: QuantOp, cc: CompensateConfig) -> None:
    q = op.weight_quantizer
    if not q.learnable_rounding:
        raise PTQError(f"compensate.name=erq needs a weight quantizer with floor / ceil rounding at {op_name}; got "
                       f"{q.kind}; valid: uniform, uniform_asym, uniform_grid weights")
    if getattr(q, "rounding", None) is not None:
        raise PTQError(f"compensate.name=erq cannot run after reconstruction ({op_name} has a learned rounding); "
                       f"valid: recon=none with compensate=erq")
    if isinstance(op, QConv2d) and op.groups != 1:
        raise PTQError(f"compensate.name=erq needs an ungrouped convolution at {op_name}; got groups={op.groups}")


@torch.no_grad()
def _float_inputs(model: nn.Module, layers: list[tuple[str, QuantOp]], x_all: torch.Tensor,
                  batch_size: int) -> dict[str, torch.Tensor]:
    """Every layer's input in the float model (every quantizer off) over all images."""
    got: dict[str, list[torch.Tensor]] = {n: [] for n, _ in layers}
    hooks = [op.register_forward_pre_hook(lambda mod, args, n=n: got[n].append(args[0].detach()))
             for n, op in layers]
    set_quant_enabled(model, False)
    try:
        for i in range(0, len(x_all), batch_size):
            model(x_all[i:i + batch_size])
    finally:
        for h in hooks:
            h.remove()
        set_quant_enabled(model, True)
    return {n: torch.cat(v) for n, v in got.items()}


@register_compensator("erq")
class ERQ(Compensator):
    compat = ("paper", "official")
    edits_weights = True   # runs on the whole model (`compensate_model`), not block by block through `fit`

    def fit(self, x, y_fp, y_q, cc) -> Fit:
        raise NotImplementedError("erq edits layers (compensate_model), it fits no side path")

    @torch.no_grad()
    def compensate_model(self, model: nn.Module, x_all: torch.Tensor, cc: CompensateConfig) -> dict:
        """Every layer in turn (module docstring); returns the report's `compensation` section."""
        t0 = time.time()
        set_quant_enabled(model, True)
        layers = erq_layers(model)
        for name, op in layers:
            _check(name, op, cc)
        float_in = _float_inputs(model, layers, x_all, cc.batch_size)
        moment = "mean_cov" if cc.compat == "official" else "raw"
        conv_lambda = cc.coe if cc.conv_lambda is None else cc.conv_lambda
        rows = []
        for name, op in layers:
            t1 = time.time()
            x_fp = float_in.pop(name)
            if cc.compat == "official":
                x_in = x_fp
            else:
                set_quant_enabled(model, True)
                (x_in, *_), _, _ = capture_unit(model, op, x_all, cc.batch_size)
            conv, embed = isinstance(op, QConv2d), PATCH_EMBED in name
            pooled = x_fp.ndim == 2
            w0, b0 = op.weight.detach().clone(), (op.bias.detach().clone() if op.bias is not None else None)
            y = _float_out(op, x_fp, w0, b0)
            xq = _rows(op, _quantized_input(op, x_in))
            q = op.weight_quantizer
            before = _output_mse(op, xq, y)
            lam1 = cc.head_lambda if pooled else 0.1 * cc.coe
            w2d = w0.reshape(w0.shape[0], -1)
            if not embed:
                w_new, b_new = ridge_update(xq, y, w2d, b0, lam1, cc.solver)
                op.weight.copy_(w_new.reshape(w0.shape))
                if b_new is not None:
                    op.bias.copy_(b_new)
                if cc.two_part and two_part_layer(name, op):
                    q = op.weight_quantizer = split_two_part(q, op.weight.detach(), cc.two_part_percentile,
                                                             cc.two_part_rows_per_column)
                else:
                    reinitialize(q, op.weight.detach())
            lam2 = conv_lambda if conv else (0.1 * cc.coe if cc.compat == "official" or not pooled else lam1)
            w_at, up, b_fin, flips = quantize_by_halves(
                op.weight.detach().reshape(w0.shape[0], -1), op.bias.detach() if op.bias is not None else None, xq,
                rounding_choices(q, w0.shape), lam2, refine=not conv, iterations=cc.iterations,
                rows_per_group=cc.rows_per_group, moment=moment, solver=cc.solver)
            op.weight.copy_(w_at.reshape(w0.shape))
            if b_fin is not None:
                op.bias.copy_(b_fin)
            q.harden(op.weight.detach(), up.reshape(w0.shape).to(op.weight.dtype))
            setattr(op, EDITED, True)
            rows.append({"layer": name, "kind": "conv" if conv else "linear", "ridge_step": not embed,
                         "lambda": [None if embed else lam1, lam2], "refined": not conv, "flips": flips,
                         "out_mse_before": round(before, 8), "out_mse_after": round(_output_mse(op, xq, y), 8),
                         "seconds": round(time.time() - t1, 3)})
            if cc.two_part:   # recorded only when on (results of two_part=false runs unchanged)
                rows[-1]["two_part_columns"] = len(q.columns) if isinstance(q, TwoPartQuantizer) else 0
            log.info("erq %s: output MSE %.3g -> %.3g, %d flips (%.1fs)", name, before, rows[-1]["out_mse_after"],
                     flips, rows[-1]["seconds"])
            del x_fp, x_in, xq, y
        set_quant_enabled(model, True)
        return {"name": cc.name, "compat": cc.compat, "images": len(x_all), "inputs":
                "float" if cc.compat == "official" else "quantized_stream", "coe": cc.coe, "solver": cc.solver,
                **({"two_part": True} if cc.two_part else {}), "layers": rows, "blocks": [], "kept": len(rows),
                "added_params": 0, "added_macs_per_image": 0, "seconds": round(time.time() - t0, 3)}


def _output_mse(op: QuantOp, xq: torch.Tensor, y: torch.Tensor) -> float:
    """Mean squared error of the quantized layer's output (its weights as quantized now) on the rows xq."""
    q = op.weight_quantizer
    w = q.fake(op.weight, q.param).reshape(op.weight.shape[0], -1)
    out = xq @ w.T + (op.bias if op.bias is not None else 0)
    return float((out - y).square().mean())
