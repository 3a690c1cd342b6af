"""The bad-input catalogue (issue 14): every bad value of every checked key is rejected by run.py with a non-zero
exit, exactly one error line naming the key, no traceback, no results file, and no pre-existing file touched.

Run in-process through run.py's own entry point (fast); tests/test_faults.py runs the subprocess fault cases.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from conftest import FAST

from tests.test_cli import BAD_INPUTS, _checkpoint, assert_one_line_error, run_in_process

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads files whatever their permissions

# key -> bad values; each value must be rejected with a line naming the key
NUMERIC = {
    "seed": ["-1", "abc", "4294967296"],
    "calib.seed": ["-1", "abc", "4294967296"],
    "calib.n_images": ["0", "-1", "abc"],
    "calib.batch_size": ["0", "-1", "abc"],
    "calib.chunk_mb": ["0", "-1", "abc"],
    "calib.capture_mb": ["0", "-1", "abc"],
    "eval.batch_size": ["0", "-1", "abc"],
    "metric.fisher_draws": ["0", "-1", "abc"],
    "data.max_test": ["0", "-1", "abc", "1.5"],
    "threads": ["0", "-1", "abc"],
    "quantizer.search.n": ["0", "-1", "abc"],
    "quantizer.search.rounds": ["0", "-1", "abc"],
    "quantizer.search.alpha": ["0", "-1", "abc"],
    "quantizer.search.beta": ["0", "-1", "abc"],
    "data.workers": ["-1", "abc"],
    "bits.w": ["1", "17", "abc"],
}
EXTRA_ARGS = {"quantizer.search": ["quantizer=ptq4vit"], "data.workers": ["data=imagenet"],
              "bits.w": ["quantizer=ptq4vit"]}
PATH_KEYS = {"model.checkpoint": [], "quantizer.load": ["quantizer=ptq4vit"]}
PATH_CASES = {"missing": "does not exist", "directory": "is a folder", "empty": "is empty",
              "unreadable": "cannot be read"}


def _cases() -> dict[str, tuple[list[str], list[str]]]:
    """case id -> (arguments, texts the error line must hold); `{inputs}` stands for the prepared folder."""
    cases = {}
    for key, values in NUMERIC.items():
        extra = next((v for k, v in EXTRA_ARGS.items() if key.startswith(k)), [])
        for value in values:
            cases[f"{key}={value}"] = ([*extra, f"{key}={value}"], [f"{key}={value}", "valid:"])
    for key, extra in PATH_KEYS.items():
        for case, problem in PATH_CASES.items():
            cases[f"{key}:{case}"] = ([*extra, f"{key}={{inputs}}/{case}"], [f"{key}=", problem, "valid:"])
    cases.update({
        "data.root:file": (["data=imagenet", "data.root={inputs}/empty"], ["data.root=", "not a folder"]),
        "data.root:missing_imagenet": (["data=imagenet", "data.root={inputs}/missing"], ["data.root=", "not exist"]),
        "data.root:unreadable": (["data.root={inputs}/unreadable_dir"], ["data.root=", "cannot be read"]),
        "data.root:empty_folder": (["data.root={inputs}/directory", "data.download=false"],
                                   ["data.root=", "not found"]),
        "data.gz_truncated": (["data.root={inputs}/truncated_gz", "data.download=false"],
                              ["t10k-images-idx3-ubyte.gz", "corrupt"]),
        "data.on_bad_file": (["data=imagenet", "data.on_bad_file=ignore"], ["data.on_bad_file=ignore", "error, skip"]),
        "data.imagenet_with_1_channel_model": (["data=imagenet", "data.root={inputs}/images"],
                                               ["expects 1x28x28", "3-channel", "data=imagenet"]),
        "data.corrupt_jpeg": (["data=imagenet", "data.root={inputs}/images", "+model.kwargs.in_chans=3",
                               "model.checkpoint=null", "data.workers=2", "calib.n_images=4"],
                              ["broken.JPEG", "data.on_bad_file=skip"]),
        "data.float_image": (["data=imagenet", "data.root={inputs}/images_float", "+model.kwargs.in_chans=3",
                              "model.checkpoint=null", "calib.n_images=4"],
                             ["float.tiff", "mode F (32-bit float)", "data.on_bad_file=skip"]),
        "data.not_wnids_for_1k_model": (["data=imagenet", "data.root={inputs}/images", "+model.kwargs.in_chans=3",
                                         "+model.kwargs.num_classes=1000", "model.checkpoint=null"],
                                        ["class folder 'cat'", "not an ImageNet-1k synset", "valid:"]),
        "data.more_folders_than_classes": (["data=imagenet", "data.root={inputs}/images", "+model.kwargs.in_chans=3",
                                            "+model.kwargs.num_classes=2", "model.checkpoint=null"],
                                           ["class folder 'fox' has label 2", "the model has 2 classes"]),
        "hydra.run.dir:read_only": (["hydra.run.dir=/proc/ptq-run"], ["hydra.run.dir=/proc/ptq-run", "valid:"]),
        "calib.mode": (["calib.mode=random"], ["calib.mode=random", "parallel, sequential"]),
        "slot_option_negative": (["quantizer=ptq4vit", "+quantizer.slots.softmax.options.m_max=-1"],
                                 ["quantizer.slots.softmax.options.m_max=-1", "valid: an integer >= 0"]),
        "slot_option_text": (["quantizer=ptq4vit", "+quantizer.slots.softmax.options.m_max=abc"],
                             ["quantizer.slots.softmax.options.m_max=abc", "is not an integer"]),
        "slot_option_unknown": (["quantizer=ptq4vit", "+quantizer.slots.softmax.options.m_mx=3"],
                                ["quantizer.slots.softmax.options.m_mx", "valid: m_max"]),
        "slot_quantizer": (["quantizer=ptq4vit", "quantizer.slots.gelu.quantizer=twin"],
                           ["quantizer.slots.gelu.quantizer=twin", "valid:", "twin_gelu"]),
        "slot_granularity": (["quantizer=ptq4vit", "quantizer.slots.matmul.granularity=channel"],
                             ["quantizer.slots.matmul.granularity=channel", "valid: head, tensor"]),
        "slot_unknown": (["quantizer=ptq4vit", "quantizer.slots.attention.quantizer=uniform"],
                         ["quantizer.slots.attention", "valid keys", "softmax"]),
        "slot_enabled": (["quantizer=ptq4vit", "quantizer.slots.softmax.enabled=maybe"],
                         ["quantizer.slots.softmax.enabled=maybe", "valid: true or false"]),
        "progress": (["progress=maybe"], ["progress=maybe", "true or false"]),
        "search.beta<alpha": (["quantizer=ptq4vit", "quantizer.search.beta=0.005"], ["quantizer.search.beta=0.005"]),
    })
    for name, (args, expected) in BAD_INPUTS.items():  # the suite's earlier bad inputs (tests/test_cli.py)
        cases[f"cli:{name}"] = (args if isinstance(args, str) else [*args, "model.checkpoint=null"], expected)
    return cases


CASES = _cases()
assert len(CASES) >= 40


def _write_truncated_gz(folder: Path) -> None:
    """A Fashion-MNIST folder whose test images archive is cut in half (the other files are fine)."""
    folder.mkdir()
    src = Path("/usr/share/datasets/fashion-mnist")
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / f"{stem}.gz").symlink_to(src / f"{stem}.gz")
    data = gzip.compress(b"\0\0\x08\x03" + b"\0" * 5000)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])


@pytest.fixture
def inputs(tmp_path, image_folder) -> Path:
    """Bad files and folders: missing, a directory, an empty file, an unreadable file and folder, a truncated
    archive, an image folder with one corrupt JPEG, one with a 32-bit float TIFF."""
    import shutil

    import numpy as np
    from PIL import Image

    d = tmp_path / "inputs"
    d.mkdir()
    (d / "directory").mkdir()
    (d / "empty").write_bytes(b"")
    (d / "unreadable").write_bytes(b"x" * 10)
    (d / "unreadable").chmod(0)
    (d / "unreadable_dir").mkdir()
    (d / "unreadable_dir").chmod(0)
    _write_truncated_gz(d / "truncated_gz")
    shutil.copytree(image_folder, d / "images_float")   # a 32-bit float image: no 8-bit reading (issue 27)
    Image.fromarray(np.ones((40, 40), "float32"), "F").save(d / "images_float" / "val" / "dog" / "float.tiff")
    os.replace(image_folder, d / "images")
    (d / "images" / "val" / "cat" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    yield d
    (d / "unreadable").chmod(0o644)
    (d / "unreadable_dir").chmod(0o755)


def _snapshot(folder: Path) -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, inputs, case):
    args, expected = CASES[case]
    if "unreadable" in case and AS_ROOT:
        pytest.skip("running as root: permissions do not stop reading")
    if isinstance(args, str):  # a checkpoint case of tests/test_cli.py: the file is written first
        path = _checkpoint(tmp_path, args)
        args, expected = [f"model.checkpoint={path}"], [str(path), *expected]
    args = [a.replace("{inputs}", str(inputs)) for a in args]
    # The run folder exists already and holds an earlier run's files: none of them may change.
    run_dir = tmp_path / "earlier"
    (run_dir / "sub").mkdir(parents=True)
    (run_dir / "notes.txt").write_text("keep me")
    (run_dir / "sub" / "results.json").write_text('{"status": "ok"}')
    before = _snapshot(run_dir)
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={run_dir}")
    base = [a for a in [*FAST, "data.max_test=100"] if a.split("=")[0] not in {b.split("=")[0] for b in args}]
    code, out, err = run_in_process([*base, *args], monkeypatch, capsys)
    assert_one_line_error(code, err, *expected)
    assert "Traceback" not in out + err
    assert {p: v for p, v in _snapshot(run_dir).items() if p in before} == before
    assert set(run_dir.rglob("results.json*")) == {run_dir / "sub" / "results.json"}
    assert not list(inputs.rglob("results.json"))


# -- saved quantizer parameters (issue 27 item 1): a corrupt file given to quantizer.load is refused -------------
PARAMS_RUN = ["quantizer=ptq4vit", "logger=none", "progress=false", "data.max_test=100"]
PARAMS_CORRUPTIONS = {  # case -> (key, new value or None to drop the key, texts of the error line)
    "nan": ("blocks.0.attn.qkv.weight.param", float("nan"), ["NaN/Inf", "valid: finite"]),
    "inf": ("blocks.1.mlp.fc2.input.scale_pos", float("inf"), ["NaN/Inf"]),
    "zero": ("blocks.0.mlp.fc1.weight.param", 0.0, ["step <= 0 (0)", "valid: steps > 0"]),
    "negative": ("blocks.2.attn.proj.input.scale", -0.01, ["step <= 0 (-0.01)"]),
    "missing": ("blocks.0.attn.qkv.weight.param", None, ["lacks the key"]),
    # a finite split m whose small-range step underflows to 0: caught in the quantizer as restored
    "split_underflow": ("blocks.0.attn.matmul2.a.param", 200.0, ["as restored", "step <= 0"]),
}


@pytest.fixture(scope="module")
def saved_params(tmp_path_factory) -> Path:
    """A real quant_params.safetensors of the default method (ptq4vit W6A6) on the test-bed ViT, quickly
    calibrated (8 random images, a 4-point search)."""
    import torch

    from ptq.cli import compose_config
    from ptq.models import build_model
    from ptq.quant import quantize_model, resolve_ptq_config, save_quant_params

    cfg = compose_config(["calib.n_images=8", "quantizer.search.n=4", "quantizer.search.rounds=1"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    quantize_model(model, resolve_ptq_config(cfg), torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)),
                   progress=False)
    path = tmp_path_factory.mktemp("params") / "quant_params.safetensors"
    save_quant_params(model, path)
    return path


def corrupt_params(source: Path, target: Path, key: str, value: float | None) -> Path:
    """A copy of the saved file with one value of `key` replaced (every value of it for 0), or `key` dropped;
    the metadata is kept."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    if value is None:
        del tensors[key]
    elif value == 0.0:
        tensors[key].fill_(0.0)
    else:
        tensors[key].view(-1)[0] = value
    save_file(tensors, str(target), metadata=meta)
    return target


@pytest.mark.parametrize("case", [*PARAMS_CORRUPTIONS, "intact"])
def test_corrupt_quant_params_refused(tmp_path, monkeypatch, capsys, saved_params, case):
    """NaN, Inf, 0 or a negative step, a missing key: exit 2, one line naming the file and the key, no run folder.
    The intact file runs (the same command, so the refusals come from the corruption)."""
    import json

    path = saved_params if case == "intact" else corrupt_params(saved_params, tmp_path / "p.safetensors",
                                                                *PARAMS_CORRUPTIONS[case][:2])
    run = tmp_path / "run"
    code, out, err = run_in_process([*PARAMS_RUN, f"quantizer.load={path}", f"hydra.run.dir={run}"], monkeypatch,
                                    capsys)
    if case == "intact":
        assert code == 0, err
        assert json.loads((run / "results.json").read_text())["status"] == "ok"
        return
    key, _, expected = PARAMS_CORRUPTIONS[case]
    assert code == 2
    assert_one_line_error(code, err, f"quantizer.load={path}", key.rsplit(".", 1)[0], *expected)
    if case != "split_underflow":  # the underflow names the derived key (scale_small), not the saved one
        assert f"'{key}'" in err
    assert not run.exists()
