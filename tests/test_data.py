"""Data loaders: Fashion-MNIST (shapes, statistics, calibration indices) and ImageNet-style folders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptq.data import build_data, calibration_indices
from ptq.data import fashion_mnist as fm
from ptq.errors import PTQError


@pytest.fixture(scope="module")
def fmnist():
    """(train_x, train_y, test_x, test_y) from the configured default root."""
    root = fm.default_root()
    return (*fm.load_split(root, "train"), *fm.load_split(root, "test"))


def test_fmnist_shapes_and_labels(fmnist):
    tx, ty, vx, vy = fmnist
    assert tx.shape == (60000, 28, 28) and tx.dtype == torch.uint8
    assert vx.shape == (10000, 28, 28) and vx.dtype == torch.uint8
    assert ty.shape == (60000,) and vy.shape == (10000,) and ty.dtype == torch.int64
    assert set(ty.unique().tolist()) == set(range(10)) == set(vy.unique().tolist())
    assert torch.bincount(vy).tolist() == [1000] * 10


def test_fmnist_normalization_statistics(fmnist):
    tx = fmnist[0]
    pixels = tx.double() / 255.0
    assert abs(pixels.mean().item() - fm.MEAN) < 5e-4 and abs(pixels.std().item() - fm.STD) < 5e-4
    x = fm.normalize(tx[:1000])
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x, ((tx[:1000].float() / 255 - 0.2860) / 0.3530).unsqueeze(1))


def test_calibration_indices_match_reference():
    idx = calibration_indices(60000, 32, 3)
    assert np.array_equal(idx, np.random.RandomState(3).permutation(60000)[:32])


@pytest.mark.parametrize("n", [0, -1, 60001, 70000])
def test_calibration_indices_out_of_range(n):
    with pytest.raises(PTQError, match=rf"calib.n_images={n} .*valid: 1..60000"):
        calibration_indices(60000, n, 3)


def test_fmnist_bundle(compose, fmnist):
    tx, ty, _, vy = fmnist
    data = build_data(compose(["data.max_test=1000"]))
    idx = np.random.RandomState(3).permutation(60000)[:32]
    assert torch.equal(data.calib_images, fm.normalize(tx[idx])) and torch.equal(data.calib_labels, ty[idx])
    assert data.num_test == 1000 and data.num_classes == 10
    batches = list(data.test_batches(256))
    assert [len(y) for _, y in batches] == [256, 256, 256, 232]
    assert torch.equal(torch.cat([y for _, y in batches]), vy[:1000])
    assert build_data(compose([])).num_test == 10000  # the whole test split by default


def test_fmnist_missing_root(compose):
    with pytest.raises(PTQError, match=r"data.root=/nonexistent .*dataset-fashion-mnist"):
        build_data(compose(["data.root=/nonexistent", "data.download=false"]))


def test_fmnist_default_root():
    from pathlib import Path

    root = fm.default_root()
    assert root == fm.DEBIAN_ROOT if Path(fm.DEBIAN_ROOT).is_dir() else root.endswith("fashion-mnist")


TINY_VIT = ["model.name=vit_tiny_patch16_224", "model.checkpoint=null", "model.kwargs.embed_dim=48",
            "model.kwargs.depth=1", "model.kwargs.num_heads=3", "+model.kwargs.img_size=32",
            "+model.kwargs.num_classes=3"]


def test_image_folder_uses_timm_eval_transform(compose, image_folder):
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from ptq.models import build_model

    cfg = compose(["data=imagenet", f"data.root={image_folder}", "data.workers=0", "calib.n_images=5", *TINY_VIT])
    model = build_model(cfg.model)
    data = build_data(cfg, model)
    # timm's data config of the model (bicubic, crop_pct 0.9, mean/std 0.5), at the size the model was built for
    expected = dict(resolve_data_config({}, model=model), input_size=(3, 32, 32))
    assert data.info["transform"] == {k: (list(v) if isinstance(v, tuple) else v) for k, v in expected.items()}
    assert data.info["transform"]["crop_pct"] == 0.9 and data.info["transform"]["interpolation"] == "bicubic"
    assert data.calib_images.shape == (5, 3, 32, 32) and data.num_classes == 3 and data.num_test == 6
    # calibration images: RandomState(seed).permutation(len(train))[:n] of the sorted train files, eval transform
    idx = np.random.RandomState(3).permutation(12)[:5]
    files = sorted((image_folder / "train").glob("*/*.JPEG"))
    transform = create_transform(**expected, is_training=False)
    first = transform(Image.open(files[idx[0]]).convert("RGB"))
    assert torch.allclose(data.calib_images[0], first)
    assert data.calib_labels.tolist() == [int(i) // 4 for i in idx]
    xs, ys = zip(*data.test_batches(4))
    assert [len(y) for y in ys] == [4, 2] and torch.cat(ys).tolist() == [0, 0, 1, 1, 2, 2]
    assert model(xs[0]).shape == (4, 3)


def test_image_folder_train_time_calibration_draw(compose, image_folder):
    """calib.transform=train on an image folder: timm's train transform of the model at its eval size, seeded."""
    from ptq.models import build_model

    over = ["data=imagenet", f"data.root={image_folder}", "data.workers=0", "calib.n_images=4", *TINY_VIT]
    cfg = compose([*over, "calib.transform=train"])
    model = build_model(cfg.model)
    a, b = build_data(cfg, model), build_data(cfg, model)
    ev = build_data(compose(over), model)
    assert a.calib_images.shape == ev.calib_images.shape == (4, 3, 32, 32)
    assert torch.equal(a.calib_images, b.calib_images) and not torch.equal(a.calib_images, ev.calib_images)
    assert a.calib_labels.tolist() == ev.calib_labels.tolist()


def test_image_folder_transform_override(compose, image_folder):
    from ptq.models import build_model

    cfg = compose(["data=imagenet", f"data.root={image_folder}", "data.workers=0", "calib.n_images=2",
                   "+data.transform.crop_pct=1.0", *TINY_VIT])
    data = build_data(cfg, build_model(cfg.model))
    assert data.info["transform"]["crop_pct"] == 1.0


@pytest.mark.parametrize("case", ["no_root", "missing_val", "too_many_calib"])
def test_image_folder_errors(compose, image_folder, case):
    import shutil

    from ptq.models import build_model

    over = {"no_root": ["data.root=null", "calib.n_images=2"], "missing_val": [f"data.root={image_folder}"],
            "too_many_calib": [f"data.root={image_folder}", "calib.n_images=13"]}[case]
    if case == "missing_val":
        shutil.rmtree(image_folder / "val")
    cfg = compose(["data=imagenet", "data.workers=0", *TINY_VIT, *over])
    match = {"no_root": "data.root=PATH", "missing_val": r"val does not exist", "too_many_calib": r"calib.n_images=13"}
    with pytest.raises(PTQError, match=match[case]):
        build_data(cfg, build_model(cfg.model))


def test_train_time_calibration_draw_is_seeded_and_differs_from_eval(compose):
    """calib.transform=train (AdaLog's reference draw): the same images as the eval draw, augmented once with
    calib.seed; the same seed gives the same tensors, another seed others, and the global RNGs are untouched."""
    import random

    from ptq.data import build_data

    base = ["data.max_test=8", "calib.n_images=6", "logger=none"]
    ev = build_data(compose([*base]))
    random.seed(11)
    torch.manual_seed(11)
    a = build_data(compose([*base, "calib.transform=train"]))
    after = (random.random(), torch.rand(1).item())
    random.seed(11)
    torch.manual_seed(11)
    assert after == (random.random(), torch.rand(1).item())
    b = build_data(compose([*base, "calib.transform=train"]))
    c = build_data(compose([*base, "calib.transform=train", "calib.seed=5"]))
    assert a.calib_images.shape == ev.calib_images.shape == (6, 1, 28, 28)
    assert torch.equal(a.calib_images, b.calib_images) and torch.equal(a.calib_labels, ev.calib_labels)
    assert not torch.equal(a.calib_images, ev.calib_images)
    assert not torch.equal(c.calib_images[:1], build_data(compose([*base, "calib.seed=5"])).calib_images[:1])
