"""Shared test helpers: config composition, the project root, a small generated image folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import ptq.plugins  # noqa: F401  (the plug-in stages, e.g. reconstruct, as run.py has them)

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# CI exports WANDB_MODE=disabled; a test that wants W&B files sets offline itself.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def compose():
    """`compose(overrides, hydra_config=False, config_name="config")` -> the composed DictConfig (Hydra's compose
    API, as run.py checks its arguments; no run folder)."""
    from ptq.cli import compose_config

    return compose_config


# Quick settings for jobs run from tests: float model, no logger, no progress bars.
FAST = ["quantizer=fp32", "logger=none", "progress=false"]


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """An ImageNet-style folder: train/ and val/ with 3 classes of small random JPEGs (4 train, 2 val each)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split, n in (("train", 4), ("val", 2)):
        for c, cls in enumerate(("cat", "dog", "fox")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                size = (40 + 8 * i, 32 + 4 * c)  # differing sizes and aspect ratios: the transform must resize
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(folder / f"{cls}_{i}.JPEG", quality=90)
    return root


def mcfg(name: str = "fmnist_vit", checkpoint: str | None = None, **kwargs):
    """A model config node (what `model=` composes to), with `kwargs` for timm.create_model."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"name": name, "kwargs": kwargs, "pretrained": False, "checkpoint": checkpoint})


def bad_checkpoint(folder: Path, model, case: str) -> Path:
    """Write a checkpoint that must not load into the default fmnist_vit `model`; returns its path."""
    import torch

    from ptq.models import build_model

    path = folder / ("bad.safetensors" if case == "random_safetensors" else "bad.pth")
    if case == "shapes":
        torch.save(build_model(mcfg(embed_dim=48)).state_dict(), path)
    elif case == "keys":
        torch.save(build_model(mcfg(depth=2)).state_dict(), path)
    elif case == "list":
        torch.save([1, 2, 3], path)
    elif case in ("random_pth", "random_safetensors"):
        gen = torch.Generator().manual_seed(0)
        path.write_bytes(torch.randint(0, 256, (4096,), generator=gen, dtype=torch.uint8).numpy().tobytes())
    elif case == "module":  # a pickled model object, not a state dict: weights_only loading refuses it
        torch.save(model, path)
    elif case == "nan":
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        sd["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
        torch.save(sd, path)
    else:
        raise ValueError(case)
    return path


def ptq_config(*overrides: str, search=None):
    """A resolved PTQConfig of the default method with `overrides` (and, given, a replaced SearchConfig)."""
    import dataclasses

    from ptq.cli import compose_config
    from ptq.quant.config import resolve_ptq_config

    pcfg = resolve_ptq_config(compose_config(list(overrides)))
    return dataclasses.replace(pcfg, search=search) if search is not None else pcfg


def random_model_and_images(cfg, n_extra: int, n_calib: int = 8):
    """A randomly initialized model of `cfg.model` (torch seed 0), `n_calib` calibration images and `n_extra`
    further images (reconstruction / compensation) with zero labels, drawn from a generator seeded 1."""
    import torch

    from ptq.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model)
    g = torch.Generator().manual_seed(1)
    x, extra = torch.randn(n_calib, 1, 28, 28, generator=g), torch.randn(n_extra, 1, 28, 28, generator=g)
    return model, x, (extra, torch.zeros(n_extra, dtype=torch.long))
