"""The float weights of a run whose recipe changed them (a transforming stage: RepQ-ViT's LayerNorm fold, AdaLog's
shift fold), saved by a deployable run beside its quantizer parameters so that `python -m ptq.export RUN_DIR` can
rebuild the calibrated model: the saved quantizer parameters alone fit only the changed weights."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ptq.errors import PTQError
from ptq.quant.params import write_safetensors_atomic
from ptq.quantizers.base import Quantizer

WEIGHTS_FILE = "model_weights.safetensors"


def model_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of the model outside its quantizers (those are the quantizer-parameter file's), by name."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, Quantizer):
            continue
        for pname, p in module.named_parameters(recurse=False):
            out[f"{name}.{pname}" if name else pname] = p.detach().cpu().clone().contiguous()
    return out


def save_model_weights(model: nn.Module, path: str | Path) -> Path:
    """Write the model's weights (model_weights) atomically, as the quantizer parameters are written."""
    return write_safetensors_atomic(model_weights(model), path)


@torch.no_grad()
def load_model_weights(model: nn.Module, path: str | Path) -> None:
    """Put saved weights into an identically built and wrapped model; a bias the fold created where the model had
    none is created. Any other difference in names or shapes: one PTQError naming the file and the weight."""
    from safetensors.torch import load_file

    try:
        saved = load_file(str(path))
    except Exception as e:
        raise PTQError(f"{path} is not a saved weight file ({type(e).__name__})") from None
    own = model_weights(model)
    for name in sorted(set(own) - set(saved)):
        raise PTQError(f"{path} lacks the weight '{name}'; valid: the file written by the same run")
    for name, value in saved.items():
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        current = getattr(module, attr, "missing")
        if current is None:            # e.g. a linear without bias that the fold gave one
            setattr(module, attr, nn.Parameter(value.clone(), requires_grad=False))
        elif isinstance(current, torch.Tensor) and current.shape == value.shape:
            current.copy_(value)
        else:
            raise PTQError(f"{path} has the weight '{name}' {tuple(value.shape)} that this model does not have "
                           f"in that shape; valid: the file written by the same run")


def match_folded_layouts(model: nn.Module, params_path: str | Path) -> list[str]:
    """Give each quantizer that a fold made per tensor (RepQ-ViT's post-LayerNorm inputs: `to_per_tensor`) the
    saved per-tensor layout before its parameters load; a freshly wrapped model has them per channel. Returns the
    keys changed."""
    import json

    from safetensors import safe_open

    from ptq.quant.wrap import quant_ops

    with safe_open(str(params_path), framework="pt") as f:
        saved = json.loads((f.metadata() or {}).get("quantizers", "{}"))
    changed = []
    for name, op in quant_ops(model).items():
        for operand, q in op.quantizers().items():
            key = f"{name}.{operand}"
            was = saved.get(key) or {}
            if hasattr(q, "to_per_tensor") and q.layout.axis is not None and was.get("axis", 0) is None \
                    and was.get("groups") == 1:
                q.to_per_tensor(torch.ones(1), torch.zeros(1))   # values: the file's, loaded next
                changed.append(key)
    return changed
