"""Safe state-dict loading (safetensors or `torch.load(weights_only=True)`) with one-line mismatch errors."""
from __future__ import annotations

from pathlib import Path

import torch

from ptq.errors import PTQError

SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict without executing code; unwrap the common {"model": ...} / {"state_dict": ...} nesting."""
    path = Path(path)
    if not path.is_file():
        raise PTQError(f"checkpoint file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except PTQError:
        raise
    except Exception as e:  # corrupt file, pickled code, wrong format
        raise PTQError(f"checkpoint {path} cannot be read as a state dict ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    for key in ("state_dict", "model", "model_ema", "state_dict_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise PTQError(f"checkpoint {path} is not a state dict (expected a mapping of parameter names to tensors, "
                       f"found {type(sd).__name__})")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def check_finite(sd: dict[str, torch.Tensor], source: str) -> None:
    for k, v in sd.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise PTQError(f"checkpoint {source} has NaN/Inf values in '{k}'")


def load_into(model: torch.nn.Module, path: str | Path) -> None:
    """Load a local state dict into `model`, naming the first mismatched keys or shapes."""
    sd = read_state_dict(path)
    check_finite(sd, str(path))
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"shape mismatch: {'; '.join(wrong[:3])}")
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else ""))
        raise PTQError(f"checkpoint {path} does not match the model: {' | '.join(parts)}")
    model.load_state_dict(sd, strict=True)


def save_state_dict(model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata=metadata)
