"""ImageNet-style folders (`root/train/<class>/*.JPEG`, `root/val/<class>/*.JPEG`) with the model's eval transform.

The transform comes from timm's pretrained data config of the model (resize, crop_pct, interpolation, mean,
std), as in the paper's evaluation; calibration images use that same eval transform (spec section 5).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ptq.errors import PTQError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def built_input_size(model: torch.nn.Module) -> tuple[int, int, int] | None:
    """(channels, height, width) the model was built for, from its patch embedding; None when unknown."""
    pe = getattr(model, "patch_embed", None)
    size, proj = getattr(pe, "img_size", None), getattr(pe, "proj", None)
    if size is None or not hasattr(proj, "in_channels"):
        return None
    return (int(proj.in_channels), int(size[0]), int(size[1]))


def eval_transform(model: torch.nn.Module, overrides: dict | None = None):
    """timm's eval transform for `model` (its pretrained_cfg: resize, crop_pct, interpolation, mean, std), optionally
    overridden (e.g. crop_pct). The input size is the one the model was built with (`model.kwargs.img_size` changes
    it; timm's pretrained_cfg keeps the default), unless the overrides name one."""
    from omegaconf import DictConfig, OmegaConf
    from timm.data import create_transform, resolve_data_config

    overrides = OmegaConf.to_container(overrides) if isinstance(overrides, DictConfig) else dict(overrides or {})
    data_cfg = resolve_data_config(overrides, model=model)
    built = built_input_size(model)
    if built is not None and "input_size" not in overrides:
        data_cfg["input_size"] = built
    return create_transform(**data_cfg, is_training=False), data_cfg


def image_folder(root: str | Path, split: str, transform) -> Dataset:
    """A torchvision ImageFolder of `root/split`, with a one-line error when it is missing or empty."""
    from torchvision.datasets import ImageFolder

    path = Path(root) / split
    if not path.is_dir():
        raise PTQError(f"image folder {path} does not exist (data.root={root}); expected {split}/<class>/<image> "
                       f"folders, valid splits: train, val")
    try:
        return ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, RuntimeError) as e:
        raise PTQError(f"image folder {path} holds no images ({IMG_EXTENSIONS}): {e}") from None
