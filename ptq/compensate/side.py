"""The side paths a compensator adds to a block, and how they are attached, saved and restored.

A side path is a child module `compensation` of the block plus a forward hook that adds it to the block's output,
so no quantized op changes its name (saved parameter files keep their keys). It acts only while the block's
quantizers are on: with every quantizer off the model is the float model again (what reconstruction, the
compensate stage itself and the float evaluation rely on).
A compensator that edits weights (ERQ) adds no side path; the weights and biases it replaced are saved here too
(kind `weights`), beside the hardened rounding its weight quantizers save themselves.
"""
from __future__ import annotations

import torch
from torch import nn

from ptq.errors import PTQError
from ptq.quant.modules import QuantOp
from ptq.quant.params import register_saved_state

PRECISIONS = ("fp16", "fp32")
ATTR = "compensation"
EDITED = "_ptq_erq_edited"   # marks a layer whose weights a compensator replaced (ERQ)
WEIGHTS = "weights"          # the saved kind of such a layer


def _quantized(block: nn.Module) -> bool:
    return any(q.enabled for m in block.modules() if isinstance(m, QuantOp) for q in m.quantizers().values())


class SidePath(nn.Module):
    """Base: `correct(x, out)` returns the compensated output; `export()` the tensors that rebuild it."""

    kind = ""

    def correct(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def export(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}

    def hook(self, block: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return self.correct(args[0], out) if _quantized(block) else out


class LinearSide(SidePath):
    """QwT: out + x @ W + b, the matmul in FP16 (inputs and W rounded to half, product back to float, bias added in
    float, as the released code does) or FP32; never quantized."""

    kind = "linear"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, precision: str = "fp16"):
        super().__init__()
        self.register_buffer("weight", weight.float().clone())   # (in, out)
        self.register_buffer("bias", bias.float().clone())
        self.precision = precision

    def correct(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.precision == "fp16":
            return out + (x.half() @ self.weight.half()).float() + self.bias
        return out + x @ self.weight + self.bias


class ChannelAffine(SidePath):
    """QwT-v2: gain * out + bias per output channel (foldable into the next requantization's scale and offset)."""

    kind = "channel_affine"

    def __init__(self, gain: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("gain", gain.float().clone())
        self.register_buffer("bias", bias.float().clone())

    def correct(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out * self.gain + self.bias


def attach(block: nn.Module, side: SidePath) -> None:
    """Add `side` to `block` (a block takes at most one)."""
    if isinstance(getattr(block, ATTR, None), SidePath):
        raise ValueError(f"{type(block).__name__} already has a compensation")
    setattr(block, ATTR, side)
    side._handle = block.register_forward_hook(side.hook)


def attached(model: nn.Module) -> dict[str, SidePath]:
    """Every attached side path by the name of its block."""
    return {name: getattr(m, ATTR) for name, m in model.named_modules() if isinstance(getattr(m, ATTR, None), SidePath)}


def edited_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every layer whose float weights a compensator replaced (ERQ), by name."""
    return {name: m for name, m in model.named_modules() if getattr(m, EDITED, False)}


def compensation_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors under `compensate.<block>.<tensor>` and {block: kind} of every attached map, and the replaced weight
    and bias of every edited layer (kind `weights`; its hardened rounding is the weight quantizer's own state)."""
    tensors, meta = {}, {}
    for name, side in attached(model).items():
        for k, v in side.export().items():
            tensors[f"compensate.{name}.{k}"] = v
        meta[name] = {"kind": side.kind, **({"precision": side.precision} if isinstance(side, LinearSide) else {})}
    for name, layer in edited_layers(model).items():
        for k in ("weight", "bias"):
            if getattr(layer, k, None) is not None:
                tensors[f"compensate.{name}.{k}"] = getattr(layer, k).detach().float().cpu().clone().contiguous()
        meta[name] = {"kind": WEIGHTS}
    return tensors, meta


def restore_compensation(model: nn.Module, tensors: dict[str, torch.Tensor], meta: dict,
                         setting: str | None = None) -> None:
    """Re-attach the maps of `compensation_state` to an identically wrapped model; `setting` (the run's
    compensate.name, None: unchecked) must match whether the file holds maps."""
    if setting is not None and (setting != "none") != bool(meta):
        raise PTQError(f"quantizer.load holds {len(meta)} compensation maps but this run has "
                       f"compensate.name={setting}; valid: the compensate setting the file was saved with")
    for name, info in meta.items():
        t = {k[len(f"compensate.{name}."):]: v for k, v in tensors.items() if k.startswith(f"compensate.{name}.")}
        if info["kind"] == WEIGHTS:
            _restore_weights(model.get_submodule(name), t)
            continue
        if info["kind"] == "linear":
            side: SidePath = LinearSide(t["weight"], t["bias"], info.get("precision", "fp16"))
        else:
            side = ChannelAffine(t["gain"], t["bias"])
        device = next(model.parameters()).device
        attach(model.get_submodule(name), side.to(device))


@torch.no_grad()
def _restore_weights(layer: nn.Module, t: dict[str, torch.Tensor]) -> None:
    for k, v in t.items():
        own = getattr(layer, k, None)
        if own is None or own.shape != v.shape:
            raise PTQError(f"quantizer.load holds compensated {k} {tuple(v.shape)} for a layer without one of that "
                           f"shape; valid: the file of this model and method")
        own.copy_(v.to(own))
    setattr(layer, EDITED, True)


def prepare_two_part(model: nn.Module, quantizers: dict) -> None:
    """Before a saved file's quantizers load: a weight quantizer saved as ERQ's two-part one (kind two_part) is
    wrapped so again (ptq/compensate/two_part.py; its columns and both parts then load from the file)."""
    from ptq.compensate.two_part import TwoPartQuantizer

    modules = dict(model.named_modules())
    for key, info in quantizers.items():
        layer, _, operand = key.rpartition(".")
        op = modules.get(layer)
        if info.get("kind") == TwoPartQuantizer.kind and operand == "weight" and isinstance(op, QuantOp) \
                and op.weight_quantizer is not None and not isinstance(op.weight_quantizer, TwoPartQuantizer):
            op.weight_quantizer = TwoPartQuantizer(op.weight_quantizer)   # anything else: the load's checks refuse


register_saved_state("compensate", compensation_state, restore_compensation,   # kept in quant_params.safetensors
                     prepare_two_part)
