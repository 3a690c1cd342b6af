"""Quantized operations that replace the float ones inside a timm model.

Each `QuantOp` holds fake quantizers for its operands and can capture, for the search, its float operands, its
float output and the squared gradient of the task loss at that output. Captured tensors get a leading sample
(image) dimension S: Swin windows are folded into the next dimension, so scale groups stay per head and the
metric treats windows like tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptq.quantizers import Quantizer


class QuantOp(nn.Module):
    """Base class: quantizers by operand name (in search order) plus capture buffers."""

    operands: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.capturing = False       # store float operands and output
        self.observing = False       # feed activation quantizers their calibration statistics
        self.capture_grad = False    # store the squared output gradient
        self.images = 1              # images in the current forward (set by the calibrator)
        self.store: dict[str, list[torch.Tensor]] = {}
        self._grads: list[torch.Tensor] = []
        self.order = -1              # position in execution order (set by the calibrator's dry run)

    def quantizer(self, operand: str) -> Quantizer:
        return getattr(self, f"{operand}_quantizer")

    def quantizers(self) -> dict[str, Quantizer]:
        return {op: self.quantizer(op) for op in self.operands if self.quantizer(op) is not None}

    def set_enabled(self, enabled: bool) -> None:
        for q in self.quantizers().values():
            q.enabled = enabled and q.initialized

    def _keep(self, name: str, t: torch.Tensor) -> None:
        self.store.setdefault(name, []).append(t.detach())

    def _maybe_capture(self, inputs: dict[str, torch.Tensor], out: torch.Tensor) -> None:
        if self.observing:
            for k, v in inputs.items():
                q = self.quantizer(k)
                if q is not None:
                    q.observe(v)
        if self.capturing:
            for k, v in inputs.items():
                self._keep(k, self.sample_view(k, v))
            self._keep("out", self.sample_view("out", out))
        if self.capture_grad and out.requires_grad:
            out.register_hook(self._grad_hook)

    def _grad_hook(self, g: torch.Tensor) -> None:
        self._grads.append(g.detach().square())

    def end_batch(self, weight: float = 1.0) -> None:
        """Turn the squared gradients of this batch (one per backward pass) into one g2 entry (their mean)."""
        if self._grads:
            g2 = torch.stack(self._grads).sum(0) * weight
            self._keep("g2", self.sample_view("out", g2))
            self._grads = []

    def take(self) -> dict[str, torch.Tensor]:
        """Concatenate and release the captured tensors."""
        out = {k: torch.cat(v) for k, v in self.store.items()}
        self.store = {}
        return out

    def sample_view(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """Reshape a forward-time tensor so that dimension 0 indexes images."""
        raise NotImplementedError

    # -- search interface ---------------------------------------------------------------------------------------
    def float_output(self, cap: dict[str, torch.Tensor], s: slice) -> torch.Tensor:
        return cap["out"][s]

    def candidate_outputs(self, operand: str, params: torch.Tensor, cap: dict[str, torch.Tensor], s: slice,
                          other_quantized: bool = True, partner: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs [C, S', ...] on samples s with `operand` quantized by each candidate in params [C, G] and the
        other operand at its current quantization (or float when other_quantized is False); `partner`: that
        other operand already computed by `partner_value` (the same for every chunk of candidates)."""
        raise NotImplementedError

    def partner_value(self, operand: str, cap: dict[str, torch.Tensor], s: slice,
                      other_quantized: bool = True) -> torch.Tensor | None:
        """The other operand of `operand` on samples s as candidate_outputs uses it (None: nothing to share)."""
        return None

    def group_view(self, out: torch.Tensor, operand: str) -> torch.Tensor:
        """[C?, S, ...output] -> [C?, S, G, T, F] for the groups of `operand`'s quantizer."""
        raise NotImplementedError


def _apply(q: Quantizer | None, x: torch.Tensor, quantized: bool = True) -> torch.Tensor:
    return q.fake(x, q.param) if (q is not None and quantized and q.initialized) else x


class QLinear(QuantOp):
    """nn.Linear with quantized weight and input."""

    operands = ("weight", "input")

    def __init__(self, linear: nn.Linear, weight_quantizer: Quantizer, input_quantizer: Quantizer | None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.input_quantizer(x) if self.input_quantizer is not None else x
        out = F.linear(xq, self.weight_quantizer(self.weight), self.bias)
        self._maybe_capture({"input": x}, out)
        return out

    def sample_view(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.images, -1, t.shape[-1])

    def partner_value(self, operand, cap, s, other_quantized=True):
        if operand == "weight":
            return _apply(self.input_quantizer, cap["input"][s], other_quantized)        # [S, T, in]
        return _apply(self.weight_quantizer, self.weight, other_quantized).t()           # [in, out]

    def candidate_outputs(self, operand, params, cap, s, other_quantized=True, partner=None):
        if partner is None:
            partner = self.partner_value(operand, cap, s, other_quantized)
        if operand == "weight":
            w = self.weight_quantizer.fake(self.weight, params)               # [C, out, in]
            out = torch.einsum("sti,coi->csto", partner, w)
        else:
            xq = self.input_quantizer.fake(cap["input"][s], params)          # [C, S, T, in]
            out = xq @ partner
        return out + self.bias if self.bias is not None else out

    def group_view(self, out, operand):
        g = self.quantizer(operand).layout.groups if operand == "weight" else 1
        *lead, t, f = out.shape
        return out.reshape(*lead, t, g, f // g).transpose(-3, -2)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class QConv2d(QuantOp):
    """The patch-embedding nn.Conv2d with quantized weight (and optionally input image)."""

    operands = ("weight", "input")

    def __init__(self, conv: nn.Conv2d, weight_quantizer: Quantizer, input_quantizer: Quantizer | None):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer

    def _conv(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.input_quantizer(x) if self.input_quantizer is not None else x
        out = self._conv(xq, self.weight_quantizer(self.weight))
        self._maybe_capture({"input": x}, out)
        return out

    def sample_view(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return t

    def partner_value(self, operand, cap, s, other_quantized=True):
        if operand == "weight":
            return _apply(self.input_quantizer, cap["input"][s], other_quantized)
        return _apply(self.weight_quantizer, self.weight, other_quantized)

    def candidate_outputs(self, operand, params, cap, s, other_quantized=True, partner=None):
        x = cap["input"][s]
        if partner is None:
            partner = self.partner_value(operand, cap, s, other_quantized)
        if operand == "weight":
            w = self.weight_quantizer.fake(self.weight, params)              # [C, out, in, kh, kw]
            xq = partner
            c, o = w.shape[:2]
            if self.groups != 1:
                return torch.stack([self._conv(xq, w[i]) for i in range(c)])
            bias = self.bias.repeat(c) if self.bias is not None else None
            out = F.conv2d(xq, w.reshape(c * o, *w.shape[2:]), bias, self.stride, self.padding, self.dilation)
            return out.reshape(x.shape[0], c, o, *out.shape[-2:]).transpose(0, 1)
        xq = self.input_quantizer.fake(x, params)                            # [C, S, Cin, H, W]
        w = partner
        c = xq.shape[0]
        out = self._conv(xq.reshape(-1, *xq.shape[2:]), w)
        return out.reshape(c, -1, *out.shape[1:])

    def group_view(self, out, operand):
        *lead, ch, h, w = out.shape
        if operand == "weight" and self.weight_quantizer.layout.groups > 1:
            g = self.weight_quantizer.layout.groups
            return out.reshape(*lead, g, 1, (ch // g) * h * w)
        return out.reshape(*lead, ch, h * w).transpose(-1, -2).unsqueeze(-3)


class QMatMul(QuantOp):
    """a @ b between activations (q @ k^T, attn @ v), with per-head (or per-layer) quantizers on both operands."""

    operands = ("a", "b")

    def __init__(self, a_quantizer: Quantizer | None, b_quantizer: Quantizer | None, heads: int):
        super().__init__()
        self.a_quantizer, self.b_quantizer, self.heads = a_quantizer, b_quantizer, heads

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        aq = self.a_quantizer(a) if self.a_quantizer is not None else a
        bq = self.b_quantizer(b) if self.b_quantizer is not None else b
        out = aq @ bq
        self._maybe_capture({"a": a, "b": b}, out)
        return out

    def sample_view(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.images, -1, *t.shape[-3:])   # [S, windows, H, N, D]

    def partner_value(self, operand, cap, s, other_quantized=True):
        if operand == "a":
            return _apply(self.b_quantizer, cap["b"][s], other_quantized)
        return _apply(self.a_quantizer, cap["a"][s], other_quantized)

    def candidate_outputs(self, operand, params, cap, s, other_quantized=True, partner=None):
        if partner is None:
            partner = self.partner_value(operand, cap, s, other_quantized)
        if operand == "a":
            return self.a_quantizer.fake(cap["a"][s], params) @ partner
        return partner @ self.b_quantizer.fake(cap["b"][s], params)

    def group_view(self, out, operand):
        *lead, w, h, n, m = out.shape
        if self.quantizer(operand).layout.groups == h:
            return out.transpose(-4, -3).reshape(*lead, h, w * n, m)
        return out.reshape(*lead, 1, w * h * n, m)

    def extra_repr(self) -> str:
        return f"heads={self.heads}"
