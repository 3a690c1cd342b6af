"""Save / load calibrated quantizer parameters (every scale, split and code range, and learned rounding offsets, by
module name; a quantizer restores its own state from what it exported)."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import torch
from torch import nn

from ptq.errors import PTQError
from ptq.quant.wrap import quant_ops, set_quant_enabled


def quant_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {}
    for name, op in quant_ops(model).items():
        for operand, q in op.quantizers().items():
            key = f"{name}.{operand}"
            for k, v in q.export().items():
                tensors[f"{key}.{k}"] = v.detach().float().cpu().clone().contiguous()
            meta[key] = q.describe()
    return tensors, meta


def save_quant_params(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    from ptq.compensate.side import compensation_state

    tensors, meta = quant_state(model)
    comp_tensors, comp_meta = compensation_state(model)   # closed-form compensation maps (ptq/compensate/)
    tensors.update(comp_tensors)
    md = {"quantizers": json.dumps(meta), "compensate": json.dumps(comp_meta)}
    md.update(metadata or {})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")  # unique: concurrent saves
    save_file(tensors, str(tmp), metadata=md)
    tmp.replace(path)


def load_quant_params(model: nn.Module, path: str | Path, compensate: str | None = None) -> None:
    """Load parameters saved by `save_quant_params` into an identically wrapped model and enable quantization;
    `compensate` (the run's compensate.name) must match whether the file holds compensation maps."""
    from safetensors import safe_open

    from ptq.models.registry import resolve_path

    path = resolve_path(str(path))
    if not path.is_file():
        raise PTQError(f"quantizer.load={path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("quantizers", "{}"))
            comp_meta = json.loads((f.metadata() or {}).get("compensate", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise PTQError(f"quantizer.load={path} is not a saved quantizer-parameter file ({type(e).__name__})") from None
    _, own = quant_state(model)
    if set(own) != set(meta):
        diff = sorted(set(own) ^ set(meta))[:3]
        raise PTQError(f"quantizer.load={path} does not match this model/method: differing quantizers {diff}")
    for name, op in quant_ops(model).items():
        for operand, q in op.quantizers().items():
            key = f"{name}.{operand}"
            mine = q.describe()
            # files saved before `axis` was recorded carry only kind, bits, form and groups
            differ = {k: (v, mine[k]) for k, v in meta[key].items() if k in mine and mine[k] != v}
            if differ or tensors[f"{key}.param"].shape != q.param.shape:
                what = ", ".join(f"{k} {saved} (this run: {own_v})" for k, (saved, own_v) in differ.items())
                raise PTQError(f"quantizer.load={path} does not match this model/method: {key} was saved with "
                               f"{what or 'another parameter shape'}")
            q.restore({k[len(key) + 1:]: v for k, v in tensors.items() if k.startswith(f"{key}.")})
    from ptq.compensate.side import restore_compensation

    if compensate is not None and (compensate != "none") != bool(comp_meta):
        raise PTQError(f"quantizer.load={path} holds {len(comp_meta)} compensation maps but this run has "
                       f"compensate.name={compensate}; valid: the compensate setting the file was saved with")
    restore_compensation(model, tensors, comp_meta)
    set_quant_enabled(model, True)
