"""Save / load calibrated quantizer parameters (every scale, split and code range, and learned rounding offsets, by
module name; a quantizer restores its own state from what it exported)."""
from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ptq.errors import PTQError, writing
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


@dataclass(frozen=True)
class SavedState:
    """State a plug-in keeps beside the quantizer parameters (ptq/compensate/: its maps), saved and restored with
    them: `save(model) -> (tensors, meta)`, `restore(model, tensors, meta, setting)` where `setting` is the run's
    `<group>.name` (None: not checked) and `tensors` every tensor of the file."""

    save: Callable[[nn.Module], tuple[dict[str, torch.Tensor], dict]]
    restore: Callable[[nn.Module, dict[str, torch.Tensor], dict, str | None], None]
    # before the quantizers load: (model, the file's {quantizer key: describe()}) puts back quantizers the plug-in
    # replaced (ERQ's two-part weights), so each saved quantizer finds one of its kind
    prepare: Callable[[nn.Module, dict], None] | None = None


SAVED_STATES: dict[str, SavedState] = {}   # metadata key (the plug-in's config group) -> its state


def register_saved_state(group: str, save, restore, prepare=None) -> None:
    SAVED_STATES[group] = SavedState(save, restore, prepare)


def save_quant_params(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    tensors, meta = quant_state(model)
    md = {"quantizers": json.dumps(meta)}
    for group, state in SAVED_STATES.items():
        extra, extra_meta = state.save(model)
        tensors.update(extra)
        md[group] = json.dumps(extra_meta)
    md.update(metadata or {})
    write_safetensors_atomic(tensors, path, md)


def write_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | Path,
                             metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file through a uniquely named temporary file and a rename (concurrent saves never share
    a temporary file, a crash never leaves half a file); a full disk is one error naming the file."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")  # unique: concurrent saves
    with writing(path):   # a full disk: one error naming the file, no temporary file left
        try:
            save_file(tensors, str(tmp), metadata=metadata)
            tmp.replace(path)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            io = re.search(r"I/O error: (.*?) \(os error (\d+)\)", str(e))   # safetensors' own error type
            if io and not isinstance(e, OSError):
                raise OSError(int(io.group(2)), io.group(1)) from e
            raise
    return path


def load_quant_params(model: nn.Module, path: str | Path, settings: dict[str, str] | None = None) -> None:
    """Load parameters saved by `save_quant_params` into an identically wrapped model and enable quantization;
    each plug-in's saved state (SAVED_STATES) is restored and checked against the run's `settings` ({group: name}).
    Every tensor must be finite, every key a quantizer restores present and every step (its POSITIVE_KEYS) > 0,
    in the file and as restored; else one PTQError naming the file and the key."""
    from safetensors import safe_open

    from ptq.models.registry import resolve_path

    path = resolve_path(str(path))
    if not path.is_file():
        raise PTQError(f"quantizer.load={path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("quantizers", "{}"))
            extra_meta = {group: json.loads((f.metadata() or {}).get(group, "{}")) for group in SAVED_STATES}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise PTQError(f"quantizer.load={path} is not a saved quantizer-parameter file ({type(e).__name__})") from None
    _check_values(path, tensors, (), "")
    for state in SAVED_STATES.values():
        if state.prepare is not None:
            state.prepare(model, meta)
    _, own = quant_state(model)
    if set(own) != set(meta):
        diff = sorted(set(own) ^ set(meta))[:3]
        raise PTQError(f"quantizer.load={path} does not match this model/method: differing quantizers {diff}")
    for name, op in quant_ops(model).items():
        for operand, q in op.quantizers().items():
            key = f"{name}.{operand}"
            saved = {k[len(key) + 1:]: v for k, v in tensors.items() if k.startswith(f"{key}.")}
            missing = sorted(restored_keys(q) - set(saved))
            if missing:
                raise PTQError(f"quantizer.load={path} lacks the key '{key}.{missing[0]}'; valid: a file saved by "
                               f"this code for this model and method (keys {key}.{{{', '.join(sorted(saved))}}})")
            mine = q.describe()
            # files saved before `axis` was recorded carry only kind, bits, form and groups
            differ = {k: (v, mine[k]) for k, v in meta[key].items() if k in mine and mine[k] != v}
            if differ or saved["param"].shape != q.param.shape:
                what = ", ".join(f"{k} {saved_v} (this run: {own_v})" for k, (saved_v, own_v) in differ.items())
                raise PTQError(f"quantizer.load={path} does not match this model/method: {key} was saved with "
                               f"{what or 'another parameter shape'}")
            _check_values(path, saved, q.POSITIVE_KEYS, f"{key}.")
            q.restore(saved)
            _check_values(path, q.export(), q.POSITIVE_KEYS, f"{key}.", " as restored")
    for group, state in SAVED_STATES.items():
        state.restore(model, tensors, extra_meta[group], (settings or {}).get(group))
    set_quant_enabled(model, True)


def restored_keys(q) -> set[str]:
    """The saved keys `q.restore` reads: `param` and every other buffer the quantizer exports (a zero point, the
    AdaLog fold flag); derived keys (scales of a split, code ranges) are not needed."""
    exported = q.export()
    return {"param"} | {name for name, _ in q.named_buffers(recurse=False) if name in exported}


def _check_values(path: Path, tensors: dict[str, torch.Tensor], positive: tuple[str, ...], prefix: str,
                  when: str = "") -> None:
    """Every floating tensor finite and every `positive` key (a step) > 0, else one line naming file and key."""
    for k, v in tensors.items():
        bad = int((~torch.isfinite(v)).sum()) if v.is_floating_point() else 0
        if bad:
            raise PTQError(f"quantizer.load={path}: '{prefix}{k}'{when} holds {bad} NaN/Inf value(s); valid: finite "
                           "values (the file is corrupt: recalibrate with quantizer.load=null)")
        if k in positive and not bool((v > 0).all()):
            raise PTQError(f"quantizer.load={path}: '{prefix}{k}'{when} holds a step <= 0 ({float(v.min()):g}); "
                           "valid: steps > 0 (the file is corrupt: recalibrate with quantizer.load=null)")
