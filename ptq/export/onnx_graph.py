"""A calibrated model as an ONNX graph with QuantizeLinear / DequantizeLinear nodes carrying the lab's scales and
zero points (QDQ format, opset 17), written by torch's TorchScript exporter (no onnxscript needed).

Each QuantOp is replaced, for the export only, by a module that computes the same arithmetic in torch (so the
traced model is the simulated one) and tells the exporter which ONNX nodes stand for it:
- a weight becomes integer codes (int8 / uint8 initializer; learned rounding included, so reconstruction results
  export as these codes) and one DequantizeLinear, per channel along the output axis where the quantizer is;
  linear weights are stored transposed [in, out] (axis 1) so DequantizeLinear feeds MatMul directly;
- an activation becomes QuantizeLinear -> DequantizeLinear (a Clip first when its code range is narrower than
  the storage type's, e.g. 6-bit codes in int8).
ONNX Runtime then fuses DQ -> MatMul into integer matmuls (ptq/export/runtime.py counts them).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ptq.errors import PTQError
from ptq.export.deployability import deployability, refusal
from ptq.quant.modules import QConv2d, QLinear, QMatMul
from ptq.quant.wrap import quant_ops
from ptq.quantizers.base import IntegerForm, Quantizer

OPSET = 17


def storage_dtype(form: IntegerForm) -> torch.dtype:
    return torch.int8 if form.qmin < 0 else torch.uint8


def _axis_shape(form: IntegerForm, ndim: int) -> list[int]:
    shape = [1] * ndim
    if form.axis is not None:
        shape[form.axis] = -1
    return shape


def integer_codes(q: Quantizer, w: torch.Tensor) -> torch.Tensor:
    """The codes of weight w under q (exactly what q.fake rounds to, learned rounding included)."""
    form = q.integer_form()
    scale = form.scale.reshape(_axis_shape(form, w.ndim)).to(w)
    zp = form.zero_point.reshape(_axis_shape(form, w.ndim)).to(w)
    codes = q.fake(w.detach().float(), q.param).div(scale).round().add(zp)
    if not torch.equal(codes, codes.clamp(form.qmin, form.qmax)):
        raise PTQError(f"{q.kind} weight codes fall outside {form.qmin}..{form.qmax}: not an affine quantizer")
    return codes


class _QDQ(torch.autograd.Function):
    """x -> (clamp(round(x / s) + z, qmin, qmax) - z) s; exported as [Clip ->] QuantizeLinear -> DequantizeLinear."""

    @staticmethod
    def forward(ctx, x, form: IntegerForm):
        shape = _axis_shape(form, x.ndim)
        s, z = form.scale.reshape(shape).to(x), form.zero_point.reshape(shape).to(x)
        return torch.div(x, s).round_().add_(z).clamp_(form.qmin, form.qmax).sub_(z).mul_(s)

    @staticmethod
    def symbolic(g, x, form: IntegerForm):
        kw = {"axis_i": form.axis} if form.axis is not None else {}
        dtype = storage_dtype(form)
        if (form.qmin, form.qmax) != ((-128, 127) if dtype == torch.int8 else (0, 255)):
            if form.axis is not None:
                raise PTQError("a per-channel activation with fewer than 8 bits has no single Clip; valid: 8 bits")
            lo, hi = ((form.qmin - form.zero_point) * form.scale), ((form.qmax - form.zero_point) * form.scale)
            x = g.op("Clip", x, g.op("Constant", value_t=lo.float()), g.op("Constant", value_t=hi.float()))
        scale = g.op("Constant", value_t=form.scale.float())
        zp = g.op("Constant", value_t=form.zero_point.to(dtype))
        return g.op("DequantizeLinear", g.op("QuantizeLinear", x, scale, zp, **kw), scale, zp, **kw)


class _DQ(torch.autograd.Function):
    """Integer codes -> (codes - z) s; exported as one DequantizeLinear of the integer initializer."""

    @staticmethod
    def forward(ctx, codes, scale, zp, axis):
        shape = [1] * codes.ndim
        if axis is not None:
            shape[axis] = -1
        return (codes.float() - zp.float().reshape(shape)) * scale.reshape(shape)

    @staticmethod
    def symbolic(g, codes, scale, zp, axis):
        kw = {"axis_i": axis} if axis is not None else {}
        return g.op("DequantizeLinear", codes, scale, zp, **kw)


class ActivationQDQ(nn.Module):
    def __init__(self, q: Quantizer | None):
        super().__init__()
        self.form = q.integer_form() if q is not None and q.initialized else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.form is None else _QDQ.apply(x, self.form)


class WeightDQ(nn.Module):
    """A weight as integer codes (an int8 / uint8 buffer) and its DequantizeLinear."""

    def __init__(self, q: Quantizer | None, w: torch.Tensor, transpose: bool = False):
        super().__init__()
        if q is None or not q.initialized:
            self.register_buffer("float_weight", (w.t() if transpose else w).detach().clone())
            self.axis = None
            return
        form = q.integer_form()
        codes = integer_codes(q, w)
        axis = form.axis + w.ndim if form.axis is not None else None
        if transpose:
            codes, axis = codes.t(), (1 - axis if axis is not None else None)
        self.register_buffer("codes", codes.to(storage_dtype(form)).contiguous())
        self.register_buffer("scale", form.scale.clone())
        self.register_buffer("zero_point", form.zero_point.to(storage_dtype(form)))
        self.axis = axis

    def forward(self) -> torch.Tensor:
        if hasattr(self, "float_weight"):
            return self.float_weight
        return _DQ.apply(self.codes, self.scale, self.zero_point, self.axis)


class ExportLinear(nn.Module):
    """x @ W^T + b as MatMul(QDQ(x), DQ(W^T codes)) + b."""

    def __init__(self, op: QLinear):
        super().__init__()
        self.input = ActivationQDQ(op.input_quantizer)
        self.weight = WeightDQ(op.weight_quantizer, op.weight, transpose=True)
        self.bias = op.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a 2-D input (the classifier head) goes through a 3-D MatMul: ORT would fuse a 2-D MatMul + Add into a
        # float Gemm before its QDQ fusion sees it
        xq = self.input(x)
        out = torch.matmul(xq.unsqueeze(1) if xq.ndim == 2 else xq, self.weight())
        out = out + self.bias if self.bias is not None else out
        return out.squeeze(1) if x.ndim == 2 else out


class ExportConv(nn.Module):
    def __init__(self, op: QConv2d):
        super().__init__()
        self.input = ActivationQDQ(op.input_quantizer)
        self.weight = WeightDQ(op.weight_quantizer, op.weight)
        self.bias, self.op = op.bias, op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op._conv(self.input(x), self.weight())


class ExportMatMul(nn.Module):
    def __init__(self, op: QMatMul):
        super().__init__()
        self.a, self.b = ActivationQDQ(op.a_quantizer), ActivationQDQ(op.b_quantizer)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.a(a), self.b(b))


EXPORTERS = {QLinear: ExportLinear, QConv2d: ExportConv, QMatMul: ExportMatMul}


def export_modules(model: nn.Module) -> nn.Module:
    """Replace every QuantOp of a calibrated model (in place) by its export form; refuses a non-deployable one."""
    report = deployability(model)
    if not report["deployable"]:
        raise PTQError(refusal(report))
    for name, op in quant_ops(model).items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, EXPORTERS[type(op)](op))
    return model


def write_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export a model already in export form (export_modules) to `path` atomically (nothing half-written)."""
    import warnings

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    model = model.eval().cpu()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example.cpu(),), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
