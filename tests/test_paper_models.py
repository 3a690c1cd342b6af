"""The paper's models (SPEC.md section 6) and their siblings: each config composes, builds with random weights,
quantizes end to end with PTQ4ViT and BasePTQ through `ptq.app.run` on a generated ImageNet-style folder at the
model's own resolution, and evaluates (top-1 / top-5 in results.json).

Search settings are cut down (2 images, a few candidates, one round). The base-size models run in CI with fewer
blocks (`CHEAP`: same width, heads, patch, resolution and windows); `pytest -m paper_full tests/test_paper_models.py`
runs every model at its full depth (a few minutes more).
Also here: the weights paths of ptq.models.registry (local checkpoint, timm's hub cache offline, the error when
neither is reachable) and device=cuda's float32 guarantee.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

# config name -> (timm name without tag, input pixels, overrides that make it cheap for CI or None)
PAPER_MODELS = {
    "vit_s32_224": ("vit_small_patch32_224", 224, None),
    "vit_s_224": ("vit_small_patch16_224", 224, None),
    "vit_b_224": ("vit_base_patch16_224", 224, ["+model.kwargs.depth=1"]),
    "vit_b_384": ("vit_base_patch16_384", 384, ["+model.kwargs.depth=1"]),
    "deit_s_224": ("deit_small_patch16_224", 224, None),
    "deit_b_224": ("deit_base_patch16_224", 224, ["+model.kwargs.depth=1"]),
    "deit_b_384": ("deit_base_patch16_384", 384, ["+model.kwargs.depth=1"]),
    "swin_t_224": ("swin_tiny_patch4_window7_224", 224, None),
    "swin_s_224": ("swin_small_patch4_window7_224", 224, ["+model.kwargs.depths=[1,1,2,1]"]),
    "swin_b_224": ("swin_base_patch4_window7_224", 224, ["+model.kwargs.depths=[1,1,2,1]"]),
    "swin_b_384": ("swin_base_patch4_window12_384", 384, ["+model.kwargs.depths=[1,1,2,1]"]),
    "vit_t_224": ("vit_tiny_patch16_224", 224, None),
    "deit_t_224": ("deit_tiny_patch16_224", 224, None),
    "deit_t_distilled_224": ("deit_tiny_distilled_patch16_224", 224, None),
    "deit_s_distilled_224": ("deit_small_distilled_patch16_224", 224, None),
    "deit_b_distilled_224": ("deit_base_distilled_patch16_224", 224, ["+model.kwargs.depth=1"]),
    "deit_b_distilled_384": ("deit_base_distilled_patch16_384", 384, ["+model.kwargs.depth=1"]),
}
# the spec's table 1, by the timm names the configs load
SPEC_TABLE1 = ("vit_small_patch32_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_base_patch16_384",
               "deit_small_patch16_224", "deit_base_patch16_224", "deit_base_patch16_384",
               "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224",
               "swin_base_patch4_window12_384")
QUICK_SEARCH = ["quantizer.search.n=2", "quantizer.search.rounds=1", "+quantizer.slots.softmax.options.m_max=3",
                "calib.n_images=2", "calib.batch_size=2"]
QUANTIZERS = ("ptq4vit", "base_ptq")


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory) -> Path:
    """train/ and val/ with 2 classes x 2 random 64-px JPEGs: every model's eval transform resizes them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("imagenet")
    for split in ("train", "val"):
        for cls in ("n01440764", "n01443537"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                arr = rng.integers(0, 256, (56 + 8 * i, 64, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / cls / f"{cls}_{i}.JPEG", quality=90)
    return root


def test_every_spec_model_has_a_config(compose):
    names = {compose([f"model={m}"]).model.name.split(".")[0] for m in PAPER_MODELS}
    assert set(SPEC_TABLE1) <= names and len(names) == len(PAPER_MODELS)


@pytest.mark.parametrize("config", PAPER_MODELS)
def test_config_composes(compose, config):
    """The short name and the timm name (a deprecated alias) compose to a tagged timm model that needs no
    network to build: the pretrained config (resolution, window) is timm's."""
    import timm
    from timm.models import get_pretrained_cfg

    timm_name, px, _ = PAPER_MODELS[config]
    m = compose([f"model={config}"]).model
    assert m.name.split(".")[0] == timm_name and "." in m.name and timm.is_model(m.name)
    assert m.pretrained is True and m.checkpoint is None and dict(m.kwargs) == {}
    assert get_pretrained_cfg(m.name).input_size == (3, px, px)
    from ptq.cli import replace_model_aliases

    with pytest.warns(FutureWarning, match=f"model={timm_name} is deprecated: use model={config}"):
        assert compose(replace_model_aliases([f"model={timm_name}"])).model == m


def _run(cfg, tmp_path, monkeypatch):
    """ptq.app.run(cfg) keeping the (quantized) model and a copy of the float model it was built as."""
    import ptq.app

    built = {}

    def build(mcfg, device):
        model = build_model(mcfg, device)
        built["float"], built["model"] = copy.deepcopy(model), model
        return model

    from ptq.models import build_model

    monkeypatch.setattr(ptq.app, "build_model", build)
    results = ptq.app.run(cfg, tmp_path)
    return results, built["model"], built["float"]


def check_end_to_end(compose, tmp_path, monkeypatch, folder: Path, config: str, quantizer: str, full: bool) -> None:
    from ptq.quant import quant_ops, set_quant_enabled
    from ptq.quant.modules import QLinear, QMatMul

    timm_name, px, cheap = PAPER_MODELS[config]
    over = [f"model={config}", "model.pretrained=false", "data=imagenet", f"data.root={folder}", "data.workers=0",
            "data.max_test=2", f"quantizer={quantizer}", *QUICK_SEARCH, "logger=none", "progress=false",
            "eval.batch_size=2", "device=cpu", *([] if full or cheap is None else cheap)]
    cfg = compose(over)
    results, model, fp = _run(cfg, tmp_path, monkeypatch)

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["status"] == "ok" and saved["quantizer"] == quantizer and saved["model"].startswith(timm_name)
    for key in ("top1", "top5", "top1_fp32", "top5_fp32"):
        assert 0.0 <= saved[key] <= 100.0
    assert saved["num_test"] == 2 and saved["calib_images"] == 2 and (tmp_path / "quant_params.safetensors").exists()
    assert saved["data"]["transform"]["input_size"] == [3, px, px] and saved["env"]["device"] == "cpu"

    ops = quant_ops(model)
    blocks = sum(len(stage.blocks) for stage in model.layers) if "swin" in config else len(model.blocks)
    assert sum(isinstance(o, QMatMul) for o in ops.values()) == 2 * blocks > 0
    assert all(q.enabled for o in ops.values() for q in o.quantizers().values())
    if "distilled" in config:  # both heads quantized; eval averages them
        assert isinstance(model.head, QLinear) and isinstance(model.head_dist, QLinear)

    x = torch.randn(2, 3, px, px, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, quantized = fp(x), model(x)
        set_quant_enabled(model, False)
        off = model(x)
    assert torch.isfinite(quantized).all() and not torch.allclose(quantized, ref, atol=1e-3)
    assert (off - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize("config", PAPER_MODELS)
def test_quantizes_end_to_end(compose, tmp_path, monkeypatch, tiny_imagenet, config, quantizer):
    """Every model, both methods, on 2 generated images at its own resolution (base-size models: fewer blocks)."""
    check_end_to_end(compose, tmp_path, monkeypatch, tiny_imagenet, config, quantizer, full=False)


@pytest.mark.paper_full
@pytest.mark.parametrize("config", [c for c, v in PAPER_MODELS.items() if v[2] is not None])
def test_quantizes_full_depth(request, compose, tmp_path, monkeypatch, tiny_imagenet, config):
    """The base-size models at their full depth (PTQ4ViT): `pytest -m paper_full tests/test_paper_models.py`."""
    if "paper_full" not in (request.config.getoption("-m") or ""):
        pytest.skip("full-depth base models run with -m paper_full")
    check_end_to_end(compose, tmp_path, monkeypatch, tiny_imagenet, config, "ptq4vit", full=True)


# -- weights ------------------------------------------------------------------------------------------------------
TINY = {"depth": 1}  # a one-block DeiT-T keeps the weight files small


def _mcfg(name="deit_tiny_patch16_224.fb_in1k", **over):
    from omegaconf import OmegaConf

    return OmegaConf.create({"name": name, "kwargs": dict(TINY), "pretrained": True, "checkpoint": None, **over})


def test_local_checkpoint_wins_over_pretrained(tmp_path):
    """model.checkpoint=PATH loads that file (no hub access even with pretrained=true)."""
    from ptq.models import build_model
    from ptq.models.checkpoint import save_state_dict

    torch.manual_seed(1)
    src = build_model(_mcfg(pretrained=False))
    for suffix in (".safetensors", ".pth"):
        path = tmp_path / f"deit{suffix}"
        save_state_dict(src, path) if suffix == ".safetensors" else torch.save(src.state_dict(), path)
        torch.manual_seed(2)
        loaded = build_model(_mcfg(checkpoint=str(path)))
        assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), loaded.state_dict().values()))


_SUBPROCESS = """
import sys
from omegaconf import OmegaConf
import torch
from ptq.errors import PTQError
from ptq.models import build_model
cfg = OmegaConf.create({"name": "deit_tiny_patch16_224.fb_in1k", "kwargs": {"depth": 1}, "pretrained": True,
                        "checkpoint": None})
try:
    model = build_model(cfg)
except PTQError as e:
    print("ERROR", e)
    sys.exit(0)
torch.save(model.state_dict(), sys.argv[1])
print("LOADED")
"""


def _build_offline(tmp_path, cache: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf_home")}
    out = subprocess.run([sys.executable, "-c", _SUBPROCESS, str(tmp_path / "loaded.pth")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_pretrained_offline_from_the_hub_cache(tmp_path):
    """pretrained=true with HF_HUB_OFFLINE=1: timm reads the weights from the hub cache (laid out as
    huggingface_hub stores a download), and when they are not there, one line says which cache folder was looked in."""
    from safetensors.torch import save_file

    from ptq.models import build_model

    cache = tmp_path / "hub"
    line = _build_offline(tmp_path, cache)
    repo = cache / "models--timm--deit_tiny_patch16_224.fb_in1k"
    assert line.startswith("ERROR pretrained weights for 'deit_tiny_patch16_224.fb_in1k' not reachable")
    assert f"in the cache {repo} " in line and "HF_HUB_OFFLINE=1" in line and "model.checkpoint=PATH" in line

    torch.manual_seed(3)
    weights = build_model(_mcfg(pretrained=False)).state_dict()
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(repo / "snapshots" / commit / "model.safetensors"))
    assert _build_offline(tmp_path, cache) == "LOADED"
    loaded = torch.load(tmp_path / "loaded.pth", weights_only=True)
    assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_pretrained_weights_that_do_not_fit(tmp_path, monkeypatch):
    """Pretrained weights that exist but do not fit the kwargs: the error names the model and kwargs, not the hub."""
    import timm

    from ptq.errors import PTQError
    from ptq.models import build_model

    def fake_create(name, pretrained=False, **kwargs):
        raise RuntimeError("Error(s) in loading state_dict for VisionTransformer: size mismatch for pos_embed")

    monkeypatch.setattr(timm, "create_model", fake_create)
    with pytest.raises(PTQError, match=r"cannot be built with kwargs \{'depth': 1\} and its pretrained weights"):
        build_model(_mcfg())


# -- device -------------------------------------------------------------------------------------------------------
def test_device_choices_and_float32_on_cuda(monkeypatch):
    from ptq.env import resolve_device
    from ptq.errors import PTQError

    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(PTQError, match="valid: auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(PTQError, match="CUDA is not available"):
            resolve_device("cuda")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        assert resolve_device("auto").type == "cuda" and resolve_device("cuda:0").index == 0
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


# -- ImageNet pipeline ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["vit_b_384", "swin_b_384", "deit_b_384", "swin_t_224", "vit_s_224"])
def test_eval_transform_from_the_pretrained_config(compose, config):
    """Resize to px / crop_pct (bicubic), center crop px, the model's mean / std: timm's pretrained data config."""
    import timm
    from PIL import Image
    from torchvision import transforms as T

    from ptq.data.image_folder import eval_transform

    timm_name, px, _ = PAPER_MODELS[config]
    with torch.device("meta"):  # the transform needs the config, not the weights
        model = timm.create_model(compose([f"model={config}"]).model.name, pretrained=False)
    transform, dcfg = eval_transform(model)
    imagenet_stats = "swin" in config or "deit" in config
    mean = (0.485, 0.456, 0.406) if imagenet_stats else (0.5, 0.5, 0.5)
    crop_pct = 1.0 if px == 384 else 0.9
    assert dcfg == {"input_size": (3, px, px), "interpolation": "bicubic", "mean": pytest.approx(mean),
                    "std": pytest.approx((0.229, 0.224, 0.225) if imagenet_stats else (0.5, 0.5, 0.5)),
                    "crop_pct": crop_pct, "crop_mode": "center"}
    resize = next(t for t in transform.transforms if isinstance(t, T.Resize))
    assert resize.size == int(px / crop_pct) and resize.interpolation == T.InterpolationMode.BICUBIC
    x = transform(Image.new("RGB", (500, 375), (255, 0, 0)))
    assert x.shape == (3, px, px) and x[0].mean().item() == pytest.approx((1 - mean[0]) / dcfg["std"][0], abs=1e-5)


def _tiny_vit_cfg(compose, root, *extra):
    return compose(["data=imagenet", f"data.root={root}", "data.workers=0", "calib.n_images=2",
                    "model.name=vit_tiny_patch16_224", "model.checkpoint=null", "model.kwargs.embed_dim=48",
                    "model.kwargs.depth=1", "model.kwargs.num_heads=3", "+model.kwargs.img_size=32",
                    "+model.kwargs.num_classes=3", *extra])   # cat, dog, fox: not ImageNet-1k wnids (issue 27)


def test_val_labels_follow_the_train_classes(compose, image_folder):
    """A val split holding only some classes keeps the train split's label of each class folder."""
    import shutil

    from ptq.data import build_data
    from ptq.errors import PTQError
    from ptq.models import build_model

    shutil.rmtree(image_folder / "val" / "cat")  # train: cat 0, dog 1, fox 2
    cfg = _tiny_vit_cfg(compose, image_folder)
    data = build_data(cfg, build_model(cfg.model))
    assert torch.cat([y for _, y in data.test_batches(3)]).tolist() == [1, 1, 2, 2]
    (image_folder / "val" / "wolf").mkdir()
    shutil.copy(next((image_folder / "val" / "dog").iterdir()), image_folder / "val" / "wolf" / "w.JPEG")
    with pytest.raises(PTQError, match=r"class folders that the train split lacks: wolf"):
        build_data(cfg, build_model(cfg.model))


def test_max_test_spreads_over_the_classes_and_workers_load(compose, image_folder):
    """data.max_test takes evenly spaced val images (every class, not the first ones); DataLoader workers work."""
    import pickle

    from ptq.data import build_data
    from ptq.data.image_folder import image_folder as image_folder_of
    from ptq.models import build_model

    cfg = _tiny_vit_cfg(compose, image_folder, "data.max_test=3", "data.workers=2")
    data = build_data(cfg, build_model(cfg.model))
    batches = list(data.test_batches(2))
    assert data.num_test == 3 and torch.cat([y for _, y in batches]).tolist() == [0, 1, 2]
    assert [tuple(x.shape) for x, _ in batches] == [(2, 3, 32, 32), (1, 3, 32, 32)]
    assert data.info["calib_indices"] == np.random.RandomState(3).permutation(12)[:2].tolist()
    val = image_folder_of(image_folder, "val", None, {"cat": 0, "dog": 1, "fox": 2})
    assert pickle.loads(pickle.dumps(val)).targets == val.targets  # workers started by spawn get a copy
