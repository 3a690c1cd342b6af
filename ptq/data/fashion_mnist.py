"""Fashion-MNIST from its IDX files: the embedded test-bed data set.

Looked for, in order: the configured root, the Debian package folder, torchvision's download cache.
Images are kept as one uint8 tensor in memory (60k x 28 x 28 = 47 MB); no DataLoader is needed.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ptq.errors import PTQError

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def default_root() -> str:
    """The Debian package folder if present, else a cache folder torchvision can download into."""
    if Path(DEBIAN_ROOT).is_dir():
        return DEBIAN_ROOT
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ptq", "fashion-mnist")


def _find(root: Path, stem: str) -> Path | None:
    for cand in (root / stem, root / f"{stem}.gz", root / "FashionMNIST" / "raw" / stem,
                 root / "FashionMNIST" / "raw" / f"{stem}.gz"):
        if cand.is_file():
            return cand
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # truncated or corrupt archive, unreadable file
        raise PTQError(f"data file {path} is corrupt or unreadable ({type(e).__name__}: {e}); valid: an IDX file, "
                       f"gzipped or not (re-download it, or point data.root at a good copy)") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise PTQError(f"data file {path} is not an IDX uint8 file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise PTQError(f"data file {path} is truncated: expected {int(np.prod(dims))} values, found {arr.size}")
    return arr.reshape(dims)


def _try_download(root: Path) -> None:
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except Exception:  # network absent or blocked: the caller reports a clear error
        pass


def load_split(root: str | None, split: str, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images uint8 [N,28,28], labels int64 [N]) of a split ("train" or "test")."""
    if split not in FILES:
        raise PTQError(f"unknown Fashion-MNIST split '{split}'; valid: train, test")
    root_path = Path(root or default_root())
    img_stem, lbl_stem = FILES[split]
    img, lbl = _find(root_path, img_stem), _find(root_path, lbl_stem)
    if (img is None or lbl is None) and download:
        _try_download(root_path)
        img, lbl = _find(root_path, img_stem), _find(root_path, lbl_stem)
    if img is None or lbl is None:
        raise PTQError(
            f"Fashion-MNIST not found in data.root={root_path} (looked for {img_stem}[.gz]); install the Debian "
            f"package dataset-fashion-mnist (files in {DEBIAN_ROOT}) or allow torchvision to download it")
    images, labels = _read_idx(img), _read_idx(lbl)
    if images.shape[0] != labels.shape[0]:
        raise PTQError(f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels in {root_path}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def normalize(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [N,28,28] -> float32 [N,1,28,28] normalized with the data set's own statistics."""
    return ((images_u8.float() / 255.0) - MEAN).div_(STD).unsqueeze(1)
