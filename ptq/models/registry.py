"""`build_model(cfg.model)`: a timm model by name, test-bed or paper model, with local or hub weights."""
from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from omegaconf import DictConfig, OmegaConf

import ptq.models.testbed  # noqa: F401  (registers the test-bed names in timm)
from ptq.errors import PTQError
from ptq.models.checkpoint import check_finite, load_into

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SUPPORTED_FAMILIES = ("vit_", "deit_", "deit3_", "swin_", "fmnist_")


def resolve_path(path: str) -> Path:
    """A relative path is looked up from the current folder, then from the project root."""
    p = Path(os.path.expanduser(path))
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def known_models() -> list[str]:
    return sorted(n for n in timm.list_models() if n.startswith(SUPPORTED_FAMILIES))


def model_kwargs(mcfg) -> dict:
    """`mcfg.kwargs` as plain Python values (lists, not ListConfig) for `timm.create_model`."""
    kwargs = mcfg.get("kwargs") or {}
    return OmegaConf.to_container(kwargs, resolve=True) if isinstance(kwargs, DictConfig) else dict(kwargs)


def build_model(mcfg, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Create `mcfg.name` with `mcfg.kwargs`, load `mcfg.checkpoint` (local) or pretrained weights, eval mode."""
    name = mcfg.name
    if not timm.is_model(name) or not name.startswith(SUPPORTED_FAMILIES):
        close = [n for n in known_models() if name.split("_")[0] in n][:8] or ["fmnist_vit", "fmnist_swin",
                                                                             "vit_small_patch16_224"]
        raise PTQError(f"unknown model '{name}'; valid: timm ViT/DeiT/Swin names or test-bed models, e.g. "
                       f"{', '.join(close)}")
    kwargs = model_kwargs(mcfg)
    checkpoint = mcfg.get("checkpoint")
    pretrained = bool(mcfg.get("pretrained", False)) and not checkpoint
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as e:
        raise PTQError(f"model.kwargs {kwargs} rejected by {name}: {e}") from None
    except (RuntimeError, OSError, ValueError, AssertionError) as e:  # timm asserts on inconsistent kwargs
        if pretrained:
            cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
            raise PTQError(f"pretrained weights for '{name}' not reachable (looked in the hub and the cache {cache}; "
                           f"offline={os.environ.get('HF_HUB_OFFLINE', '0')}): {str(e).splitlines()[0][:160]}; "
                           f"set model.checkpoint=PATH to a local file instead") from None
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PTQError(f"model '{name}' cannot be built with kwargs {kwargs}: {reason}") from None
    if checkpoint:
        load_into(model, resolve_path(str(checkpoint)))
    else:
        check_finite(model.state_dict(), f"of model {name}")
    return model.eval().to(device)
