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
from ptq.models.outliers import apply_outliers

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


def pretrained_source(name: str) -> str:
    """Where timm looks for the pretrained weights of `name`, in words: the hub repo and its cache folder, a URL and
    the torch hub cache, or a local file."""
    from timm.models import get_pretrained_cfg

    pcfg = get_pretrained_cfg(name)
    if pcfg is None:
        return "timm defines no pretrained weights for it"
    if pcfg.file:
        return f"looked for the file {pcfg.file}"
    if pcfg.hf_hub_id:
        from huggingface_hub import constants

        repo = pcfg.hf_hub_id.split("@")[0]
        where = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
        mode = ("HF_HUB_OFFLINE=1: the cache only" if constants.HF_HUB_OFFLINE
                else "the hub first, then the cache; HF_HUB_OFFLINE=1 skips the hub")
        return (f"looked for {pcfg.hf_hub_filename or 'model.safetensors / pytorch_model.bin'} of the Hugging Face "
                f"repo {repo} in the cache {where} ({mode}; HF_HUB_CACHE or HF_HOME move the cache)")
    if pcfg.url:
        return f"looked for {pcfg.url} in the torch hub cache {Path(torch.hub.get_dir()) / 'checkpoints'}"
    return "timm names no source for its weights"


def build_model(mcfg, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Create `mcfg.name` with `mcfg.kwargs`, load `mcfg.checkpoint` (local) or pretrained weights, give it the
    post-LayerNorm outliers of `mcfg.outliers` (function-preserving; off by default), eval mode."""
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
        reason = str(e).splitlines()[0].split(". ")[0][:160] if str(e) else type(e).__name__
        if pretrained and "state_dict" not in str(e):
            raise PTQError(f"pretrained weights for '{name}' not reachable: {pretrained_source(name)} ({reason}); "
                           f"set model.checkpoint=PATH to a local state dict instead") from None
        raise PTQError(f"model '{name}' cannot be built with kwargs {kwargs}"
                       f"{' and its pretrained weights' if pretrained else ''}: {reason}") from None
    if checkpoint:
        load_into(model, resolve_path(str(checkpoint)))
    else:
        check_finite(model.state_dict(), f"of model {name}")
    apply_outliers(model, mcfg.get("outliers"))
    return model.eval().to(device)
