"""`build_data(cfg, model)`: calibration batch + test iterator for the configured data set."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ptq.compensate_defaults import COMPENSATE_BY_COMPAT
from ptq.errors import PTQError, choices

DATASETS = ("fmnist", "imagenet")


def calibration_indices(n_train: int, n_images: int, seed: int) -> np.ndarray:
    """Spec section 5: `RandomState(seed).permutation(len(train))[:n]`."""
    if not isinstance(n_images, int) or n_images < 1 or n_images > n_train:
        raise PTQError(f"calib.n_images={n_images} is impossible: the train split holds {n_train} images; "
                       f"valid: 1..{n_train}")
    return np.random.RandomState(seed).permutation(n_train)[:n_images]


def augmented(images: list, transform, seed: int) -> list:
    """`transform` applied to each image with the random generators seeded by `seed` (python's `random`, which
    timm's crops use, and torch's), restored afterwards: one fixed draw of a train-time augmentation."""
    import random

    state = random.getstate()
    random.seed(seed)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [transform(im) for im in images]
    finally:
        random.setstate(state)


def fmnist_train_transform():
    """Train-time augmentation of 28x28 test-bed images as timm's (RandomResizedCrop, scale 0.08-1, and a
    horizontal flip with probability 0.5; colour jitter does not apply to one channel), on normalized tensors."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(28, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip(0.5)])


def _permutation_slice(n_train: int, start: int, n_images: int, seed: int, key: str, before: str) -> np.ndarray:
    """Positions start..start + n_images of the calibration permutation (RandomState(seed)); `key` and `before`
    (what the first `start` images are) word the error when the train split is too small."""
    if start + n_images > n_train:
        raise PTQError(f"{key}={n_images} is impossible: the train split holds {n_train} images and {start} "
                       f"{before}; valid: 1..{n_train - start}")
    return np.random.RandomState(seed).permutation(n_train)[start:start + n_images]


def reconstruction_indices(n_train: int, n_calib: int, n_images: int, seed: int) -> np.ndarray:
    """The block-reconstruction images: the next `n_images` of the calibration permutation, so disjoint from the
    calibration images and drawn with the same seed."""
    return _permutation_slice(n_train, n_calib, n_images, seed, "recon.n_images", "are calibration images")


def compensation_indices(n_train: int, start: int, n_images: int, seed: int) -> np.ndarray:
    """The compensation images: `n_images` of the calibration permutation from position `start` (distinct: after
    the calibration and reconstruction images; else 0, overlapping them)."""
    return _permutation_slice(n_train, start, n_images, seed, "compensate.n_images",
                              "come before them in the permutation")


def _comp_indices(cfg, n_train: int) -> np.ndarray | None:
    comp = cfg.get("compensate")
    if comp is None or comp.name == "none":
        return None
    recon = cfg.get("recon")
    start = 0
    if comp.distinct:
        start = cfg.calib.n_images + (recon.n_images if _recon_drawn(cfg) else 0)
    return compensation_indices(n_train, start, comp.n_images, cfg.calib.seed)


def _comp_augmentation(cfg) -> str:
    comp = cfg.compensate
    return comp.augmentation if comp.augmentation is not None else COMPENSATE_BY_COMPAT[comp.compat]["augmentation"]


def seeded(seed: int, fn: Callable[[], list]) -> list:
    """fn() with python's, numpy's and torch's generators seeded by `seed`, all restored afterwards (timm's
    RandAugment draws its ops from numpy, its magnitudes from python)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return augmented([None], lambda _: fn(), seed)[0]
    finally:
        np.random.set_state(state)


def fmnist_randaugment_transform():
    """The compensation images' training augmentation on 28x28 grey PIL images, QwT's ImageNet recipe scaled to the
    test-bed: RandomResizedCrop(28, scale 0.08-1, bicubic), horizontal flip (p 0.5), timm's RandAugment
    `rand-m9-mstd0.5-inc1` (2 ops, magnitude 9, std 0.5; translations up to 0.45 x 28 = 12 px, fill the data
    set's mean grey); colour ops act on the one channel as they do on grey images."""
    from timm.data.auto_augment import rand_augment_transform
    from torchvision import transforms

    from ptq.data.fashion_mnist import MEAN

    hparams = {"translate_const": int(28 * 0.45), "img_mean": round(255 * MEAN), "interpolation": 3}
    return transforms.Compose([
        transforms.RandomResizedCrop(28, scale=(0.08, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(0.5), rand_augment_transform("rand-m9-mstd0.5-inc1", hparams)])


def _fmnist_comp_images(cfg, train_x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    from PIL import Image

    from ptq.data import fashion_mnist as fm

    images = train_x[torch.from_numpy(idx)]
    if _comp_augmentation(cfg) != "train":
        return fm.normalize(images)
    aug = fmnist_randaugment_transform()
    seed = cfg.compensate.seed if cfg.compensate.seed is not None else cfg.calib.seed
    out = seeded(seed, lambda: [np.asarray(aug(Image.fromarray(im.numpy(), mode="L"))) for im in images])
    return fm.normalize(torch.from_numpy(np.stack(out)))


def _recon_drawn(cfg) -> bool:
    """Whether the run draws reconstruction images: block reconstruction or MLP reconstruction (which uses the
    same recon.n_images images, as the APHQ-ViT code uses its optimization images for both) is on."""
    recon, mlp = cfg.get("recon"), cfg.get("mlp_recon")
    return (recon is not None and recon.name != "none") or (mlp is not None and mlp.name != "none")


def _recon_indices(cfg, n_train: int) -> np.ndarray | None:
    recon = cfg.get("recon")
    if not _recon_drawn(cfg):
        return None
    return reconstruction_indices(n_train, cfg.calib.n_images, recon.n_images, cfg.calib.seed)


@dataclass
class DataBundle:
    """What a run needs from a data set: one calibration batch and a batched test iterator."""

    name: str
    calib_images: torch.Tensor
    calib_labels: torch.Tensor
    num_test: int
    num_classes: int
    _iter_test: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]] = field(repr=False)
    info: dict = field(default_factory=dict)
    recon_images: torch.Tensor | None = None   # block-reconstruction images (recon.name != none)
    recon_labels: torch.Tensor | None = None
    comp_images: torch.Tensor | None = None    # compensation images (compensate.name != none)
    comp_labels: torch.Tensor | None = None

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._iter_test(batch_size)


def _fmnist(cfg, model) -> DataBundle:
    from ptq.data import fashion_mnist as fm
    from ptq.data.image_folder import built_input_size

    size = built_input_size(model) if model is not None else None
    if size is not None and size != (1, 28, 28):
        raise PTQError(f"model {cfg.model.name} takes {size[0]}x{size[1]}x{size[2]} images but data=fmnist gives "
                       f"1x28x28; valid: a test-bed model (fmnist_vit, fmnist_swin) or data=imagenet data.root=PATH")
    root = cfg.data.get("root") or fm.default_root()
    train_x, train_y = fm.load_split(root, "train", download=cfg.data.get("download", True))
    test_x, test_y = fm.load_split(root, "test", download=cfg.data.get("download", True))
    idx = torch.from_numpy(calibration_indices(len(train_x), cfg.calib.n_images, cfg.calib.seed))
    max_test = cfg.data.get("max_test")
    if max_test:
        test_x, test_y = test_x[:max_test], test_y[:max_test]

    def batches(bs: int):
        for i in range(0, len(test_x), bs):
            yield fm.normalize(test_x[i:i + bs]), test_y[i:i + bs]

    calib_x = fm.normalize(train_x[idx])
    if cfg.calib.get("transform", "eval") == "train":
        calib_x = torch.stack(augmented(list(calib_x), fmnist_train_transform(), cfg.calib.seed))
    bundle = DataBundle("fmnist", calib_x, train_y[idx], len(test_x), 10, batches,
                        {"root": str(root), "mean": fm.MEAN, "std": fm.STD,
                         "calib_transform": cfg.calib.get("transform", "eval")})
    ridx = _recon_indices(cfg, len(train_x))
    if ridx is not None:
        ridx = torch.from_numpy(ridx)
        bundle.recon_images, bundle.recon_labels = fm.normalize(train_x[ridx]), train_y[ridx]
    cidx = _comp_indices(cfg, len(train_x))
    if cidx is not None:
        bundle.comp_images = _fmnist_comp_images(cfg, train_x, cidx)
        bundle.comp_labels = train_y[torch.from_numpy(cidx)]
    return bundle


def _imagenet(cfg, model) -> DataBundle:
    from torch.utils.data import DataLoader, Subset

    from ptq.data.image_folder import BadFiles, built_input_size, eval_transform, image_folder

    root = cfg.data.get("root")
    if not root:
        raise PTQError("data=imagenet needs data.root=PATH (a folder with train/ and val/ class folders)")
    size = built_input_size(model) if model is not None else None
    if size is not None and size[0] != 3:
        raise PTQError(f"model {cfg.model.name} expects {size[0]}x{size[1]}x{size[2]} images but data=imagenet gives "
                       f"3-channel RGB images (3x{size[1]}x{size[2]} after the model's transform); valid: a 3-channel "
                       "model (e.g. model=deit_s_224), or data=fmnist for the test-bed models")
    bad_files = BadFiles(str(cfg.data.get("on_bad_file", "error")))
    transform, data_cfg = eval_transform(model, cfg.data.get("transform") or {})
    train = image_folder(root, cfg.data.get("train_split", "train"), transform,
                         num_classes=getattr(model, "num_classes", None))   # ImageNet-1k labels for wnid folders
    val = image_folder(root, cfg.data.get("val_split", "val"), transform, train.class_to_idx)
    idx = calibration_indices(len(train), cfg.calib.n_images, cfg.calib.seed)
    if cfg.calib.get("transform", "eval") == "train":   # timm's train transform of the model, drawn once
        from timm.data import create_transform

        aug = create_transform(**data_cfg, is_training=True)   # the eval transform's size, mean, std, interpolation
        raw = image_folder(root, cfg.data.get("train_split", "train"), None, train.class_to_idx)
        picked = bad_files.keep([raw[int(i)] for i in idx])
        images = augmented([p[0] for p in picked], aug, cfg.calib.seed)
        calib = list(zip(images, [p[1] for p in picked]))
    else:
        calib = bad_files.keep([train[int(i)] for i in idx])
    if not calib:
        raise PTQError(f"every calibration image of {root} is corrupt; valid: readable images")
    calib_x = torch.stack([c[0] for c in calib])
    calib_y = torch.tensor([c[1] for c in calib], dtype=torch.long)
    max_test = cfg.data.get("max_test")
    if max_test and max_test < len(val):  # evenly spaced over the sorted split: every class, not the first ones
        val = Subset(val, (np.arange(max_test) * len(val) // max_test).tolist())
    workers = loader_workers(int(cfg.data.get("workers", 4)))

    def batches(bs: int):
        loader = DataLoader(val, batch_size=bs, shuffle=False, num_workers=workers, collate_fn=bad_files.collate,
                            pin_memory=torch.cuda.is_available(), persistent_workers=False)
        for batch, bad in loader:
            bad_files.keep(bad)
            if batch is not None:
                yield batch
        info["skipped_files"] = sorted(set(bad_files.skipped))

    info = {"root": str(root), "transform": {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()},
            "num_train": len(train), "classes": len(train.classes), "labels": train.label_space,
            "calib_indices": idx.tolist(),
            "workers": workers, "skipped_files": list(bad_files.skipped)}
    bundle = DataBundle("imagenet", calib_x, calib_y, len(val), len(train.classes), batches, info)
    ridx = _recon_indices(cfg, len(train))
    if ridx is not None:
        recon = [train[int(i)] for i in ridx]
        bundle.recon_images = torch.stack([r[0] for r in recon])
        bundle.recon_labels = torch.tensor([r[1] for r in recon], dtype=torch.long)
    cidx = _comp_indices(cfg, len(train))
    if cidx is not None:
        if _comp_augmentation(cfg) == "train":   # timm's train transform of the model with RandAugment m9
            from timm.data import create_transform

            aug = create_transform(**data_cfg, is_training=True, auto_augment="rand-m9-mstd0.5-inc1")
            raw = image_folder(root, cfg.data.get("train_split", "train"), None, train.class_to_idx)
            picked = bad_files.keep([raw[int(i)] for i in cidx])
            seed = cfg.compensate.seed if cfg.compensate.seed is not None else cfg.calib.seed
            comp = list(zip(seeded(seed, lambda: [aug(p[0]) for p in picked]), [p[1] for p in picked]))
        else:
            comp = bad_files.keep([train[int(i)] for i in cidx])
        bundle.comp_images = torch.stack([c[0] for c in comp])
        bundle.comp_labels = torch.tensor([c[1] for c in comp], dtype=torch.long)
    return bundle


def loader_workers(requested: int) -> int:
    """DataLoader workers: the requested number, at most the available cores (more only wait on each other)."""
    from ptq.env import available_cores

    return max(0, min(requested, available_cores()))


def build_data(cfg, model: torch.nn.Module | None = None) -> DataBundle:
    """Build the data set named by `cfg.data.name`."""
    name = cfg.data.name
    if name == "fmnist":
        return _fmnist(cfg, model)
    if name == "imagenet":
        return _imagenet(cfg, model)
    raise PTQError(f"unknown data set data.name='{name}'; valid: {choices(DATASETS)}")
