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


def eval_transform(model: torch.nn.Module, overrides: dict | None = None):
    """timm's eval transform for `model` (its pretrained_cfg), optionally overridden (e.g. crop_pct)."""
    from timm.data import create_transform, resolve_data_config

    data_cfg = resolve_data_config(dict(overrides or {}), model=model)
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
