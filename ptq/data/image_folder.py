"""ImageNet-style folders (`root/train/<class>/*.JPEG`, `root/val/<class>/*.JPEG`) with the model's eval transform.

The transform comes from timm's pretrained data config of the model (resize, crop_pct, interpolation, mean,
std), as in the paper's evaluation; calibration images use that same eval transform (spec section 5). Images are
decoded to 8-bit RGB by `load_rgb` (16-bit grey scaled to 8 bits, modes that cannot be converted refused). Labels:
`label_map` (ImageNet-1k indices for wnid folders, checked against the model's classes).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from ptq.errors import PTQError

log = logging.getLogger("ptq")
BAD_FILE_POLICIES = ("error", "skip")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
# The 1000 ImageNet-1k synsets (wnids) in canonical order, sorted: a wnid's line number is its label in every
# ImageNet-1k model (timm's, torchvision's). A copy of timm's timm/data/_info/imagenet_synsets.txt.
IMAGENET_SYNSETS = Path(__file__).with_name("imagenet_synsets.txt")
# 16-bit grey (PNG bit depth 16; some readers give it as "I", 32-bit integers): scaled to 8 bits
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class UnsupportedImage(ValueError):
    """An image whose pixel format has no defined 8-bit RGB reading (e.g. 32-bit float)."""


def load_rgb(path: str):
    """Decode an image file to 8-bit RGB (a PIL image). 16-bit grey (modes I;16*, and I holding 0..65535) keeps
    its high byte, x >> 8 = floor(x / 256) (the inverse of 8 -> 16 bit replication x * 257): Pillow's own convert
    clips such values at 255, which makes the image white. Every other mode goes through Pillow's convert("RGB")
    as torchvision's default loader does, so 8-bit files decode as before (L and 1 grey replicated, P through its
    palette, CMYK by Pillow's formula, LA / RGBA / PA with the alpha dropped). Refused (UnsupportedImage, named with
    the file by BadFiles): 32-bit float (F) and integer images with values outside 0..65535."""
    import numpy as np
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
    if img.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise UnsupportedImage(f"mode {img.mode} with values {values.min()}..{values.max()} has no 8-bit "
                                   "reading (8-bit images and 16-bit values 0..65535 are read)")
        return Image.fromarray((values >> 8).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        raise UnsupportedImage("mode F (32-bit float) has no 8-bit reading (8- and 16-bit images are read)")
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise UnsupportedImage(f"mode {img.mode} cannot be converted to RGB ({e})") from None


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


@dataclass(frozen=True)
class BadFile:
    """Stands for an image that could not be decoded; DataLoader workers return it instead of raising, so that
    the main process names the file in one line (or skips it)."""

    path: str
    error: str


class BadFiles:
    """What to do with corrupt images (`data.on_bad_file`): raise a PTQError naming the file, or skip it with a
    warning and keep the list for results.json."""

    def __init__(self, policy: str):
        if policy not in BAD_FILE_POLICIES:
            raise PTQError(f"data.on_bad_file={policy}; valid: {', '.join(BAD_FILE_POLICIES)}")
        self.policy, self.skipped = policy, []

    def keep(self, items: list) -> list:
        """`items` ((image, label) pairs) without the bad ones."""
        good = []
        for image, label in items:
            if not isinstance(image, BadFile):
                good.append((image, label))
                continue
            if self.policy == "error":
                raise PTQError(f"image {image.path} cannot be read ({image.error}); valid: a readable image, or "
                               "data.on_bad_file=skip to skip corrupt images")
            log.warning("skipped corrupt image %s (%s)", image.path, image.error)
            self.skipped.append(image.path)
        return good

    def collate(self, batch: list):
        """DataLoader collate (runs in the workers): (images, labels) of the good items, and the bad ones."""
        from torch.utils.data import default_collate

        good = [item for item in batch if not isinstance(item[0], BadFile)]
        return (default_collate(good) if good else None), [item for item in batch if isinstance(item[0], BadFile)]


@functools.cache
def imagenet_synsets() -> dict[str, int]:
    """wnid -> its ImageNet-1k label (0..999)."""
    return {w: i for i, w in enumerate(IMAGENET_SYNSETS.read_text().split())}


def label_map(classes: list[str], folder: str, num_classes: int | None = None) -> tuple[dict[str, int], str]:
    """(class folder -> label, which label space). Folders all named by ImageNet-1k wnids keep their ImageNet-1k
    labels, also for a subset of the classes ("imagenet-1k"); other names are labelled 0..k-1 in sorted order, as
    torchvision's ImageFolder does ("folder order"). Refused, with the model's class count `num_classes`: a name
    that is not an ImageNet-1k wnid with a 1000-class model, ImageNet-1k folders with a model of more classes
    (another label space, e.g. ImageNet-21k), and any label >= num_classes."""
    synsets = imagenet_synsets()
    if all(c in synsets for c in classes):
        mapping, space = {c: synsets[c] for c in classes}, "imagenet-1k"
        if num_classes is not None and num_classes > len(synsets):
            raise PTQError(f"image folder {folder} holds ImageNet-1k class folders ({classes[0]} ...) but the model "
                           f"has {num_classes} classes, not ImageNet-1k's {len(synsets)}; valid: a 1000-class model")
    elif num_classes == len(synsets):
        bad = next(c for c in classes if c not in synsets)
        raise PTQError(f"image folder {folder} has the class folder '{bad}', not an ImageNet-1k synset, for a model "
                       f"with the 1000 ImageNet-1k classes; valid: folders named by wnids (n01440764 ... n15075141, "
                       f"{IMAGENET_SYNSETS.name}) or a model with {len(classes)} classes")
    else:
        mapping, space = {c: i for i, c in enumerate(sorted(classes))}, "folder order"
    too_high = [(c, i) for c, i in mapping.items() if num_classes is not None and i >= num_classes]
    if too_high:
        c, i = too_high[0]
        raise PTQError(f"image folder {folder}: class folder '{c}' has label {i} ({space}) but the model has "
                       f"{num_classes} classes; valid: labels 0..{num_classes - 1} (at most {num_classes} class "
                       "folders, or ImageNet-1k wnid folders with a 1000-class model)")
    return mapping, space


class LabelledFolder(ImageFolder):
    """torchvision's ImageFolder whose class -> label map can be fixed from outside (the train split's), decoding
    with `load_rgb`; an image that cannot be decoded is returned as a BadFile."""

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            sample = self.loader(path)
        except (OSError, SyntaxError, ValueError) as e:  # PIL: unidentified, truncated or broken image files
            return BadFile(path, f"{type(e).__name__}: {' '.join(str(e).split())}"), target
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target

    def __init__(self, root: str, transform=None, class_to_idx: dict[str, int] | None = None,
                 num_classes: int | None = None):
        self.fixed_class_to_idx, self.num_classes, self.label_space = class_to_idx, num_classes, "given"
        super().__init__(root, transform=transform, loader=load_rgb)

    def find_classes(self, directory):
        classes, _ = super().find_classes(directory)
        fixed = self.fixed_class_to_idx
        if fixed is None:
            mapping, self.label_space = label_map(classes, directory, self.num_classes)
            return classes, mapping
        unknown = [c for c in classes if c not in fixed]
        if unknown:
            raise PTQError(f"image folder {directory} has class folders that the train split lacks: "
                           f"{', '.join(unknown[:5])}; valid: the train split's {len(fixed)} classes")
        return classes, {c: fixed[c] for c in classes}


def image_folder(root: str | Path, split: str, transform, class_to_idx: dict[str, int] | None = None,
                 num_classes: int | None = None) -> Dataset:
    """A torchvision ImageFolder of `root/split`, with a one-line error when it is missing or empty.

    Labels by `label_map` checked against the model's `num_classes`; `class_to_idx` (the train split's) fixes the
    label of each class folder instead, so that a val split holding only some of the classes keeps the train
    split's labels."""
    path = Path(root) / split
    if not path.is_dir():
        raise PTQError(f"image folder {path} does not exist (data.root={root}); expected {split}/<class>/<image> "
                       f"folders, valid splits: train, val")
    try:
        return LabelledFolder(str(path), transform=transform, class_to_idx=class_to_idx, num_classes=num_classes)
    except (FileNotFoundError, RuntimeError) as e:
        raise PTQError(f"image folder {path} holds no images ({IMG_EXTENSIONS}): {e}") from None
