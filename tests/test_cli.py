"""run.py end to end: a real job as a subprocess, and every bad input as a one-line error with a non-zero exit
and no run folder left behind (in-process through run.py's own entry point, two of them as subprocesses)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from conftest import FAST, ROOT, bad_checkpoint, mcfg


def _env():
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=path)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_py(args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def run_in_process(args, monkeypatch, capsys) -> tuple[int, str, str]:
    """`python run.py ARGS` in this process (run.py executed as __main__): (exit code, stdout, stderr)."""
    import runpy

    monkeypatch.setattr(sys, "argv", [str(ROOT / "run.py"), *args])
    code = 0
    try:
        runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    except SystemExit as e:
        code = e.code
    finally:
        for handler in logging.getLogger().handlers[:]:  # Hydra's job logging points at the removed run folder
            logging.getLogger().removeHandler(handler)
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, *expected):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], (text, lines[0])


@pytest.mark.slow
def test_run_py_subprocess_evaluates_own_checkpoint(tmp_path):
    """A user's own checkpoint of the test-bed ViT shape, evaluated by run.py as the README shows."""
    from ptq.models import build_model

    torch.manual_seed(0)
    ckpt = tmp_path / "own.pt"
    torch.save(build_model(mcfg(embed_dim=96, depth=4, num_heads=3)).state_dict(), ckpt)
    out = tmp_path / "run"
    proc = run_py(["model=fmnist_vit", "model.kwargs.embed_dim=96", "model.kwargs.depth=4", "model.kwargs.num_heads=3",
                   f"model.checkpoint={ckpt}", "quantizer=fp32", "data.max_test=500", f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "top-1 / fp32" in proc.stdout and str(out / "results.json") in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "ok" and results["num_test"] == 500 and results["quantizer"] == "fp32"
    assert results["config"]["model"]["checkpoint"] == str(ckpt)
    assert {"torch", "timm", "git_commit", "device"} <= set(results["env"])
    assert (out / ".hydra" / "config.yaml").is_file() and (out / "run.log").is_file()


@pytest.mark.parametrize("args,expected", [
    (["model=foo"], ["'foo'", "valid:", "fmnist_swin, fmnist_vit"]),
    (["quantizer.bogus=1"], ["'quantizer.bogus'", "valid keys of quantizer:", "compat",
                             "typed groups take no new keys"]),
])
def test_run_py_subprocess_rejects_config(tmp_path, args, expected):
    out = tmp_path / "run"
    proc = run_py([*args, f"hydra.run.dir={out}"], timeout=60)
    assert_one_line_error(proc.returncode, proc.stderr, *expected)
    assert not out.exists()


def _checkpoint(tmp_path, case):
    torch.manual_seed(0)
    from ptq.models import build_model

    return bad_checkpoint(tmp_path, build_model(mcfg()), case)


BAD_INPUTS = {
    "unknown_model_option": (["model=foo"], ["unknown model 'foo'", "valid:", "fmnist_swin, fmnist_vit"]),
    "unknown_model_name": (["model.name=foo_bar"], ["unknown model 'foo_bar'", "valid:"]),
    "unknown_key": (["calib.bogus=1"], ["unknown config key 'calib.bogus'", "valid keys of calib:", "n_images"]),
    "unknown_kwarg": (["model.kwargs.bogus=1"], ["'model.kwargs.bogus'", "embed_dim", "+model.kwargs.bogus=1"]),
    "unknown_bits": (["bits=w9a9"], ["unknown bits 'w9a9'", "valid: w3a3, w4a4, w6a6, w8a8"]),
    "missing_data_root": (["data.root=/nonexistent", "data.download=false"],
                          ["data.root=/nonexistent", "dataset-fashion-mnist"]),
    "model_data_mismatch": (["+model.kwargs.img_size=32"], ["fmnist_vit takes 1x32x32", "valid:", "data=imagenet"]),
    "calib_zero": (["calib.n_images=0"], ["calib.n_images=0", "valid:"]),
    "calib_too_many": (["calib.n_images=70000"], ["calib.n_images=70000", "valid: 1..60000"]),
    "bits_one": (["bits.w=1"], ["bits.w=1", "valid:"]),
    "checkpoint_shapes": ("shapes", ["shape mismatch: cls_token (1, 1, 48) vs model (1, 1, 96)"]),
    "checkpoint_keys": ("keys", ["missing keys: blocks.2."]),
    "checkpoint_list": ("list", ["is not a state dict", "found list"]),
    "checkpoint_random_bytes": ("random_pth", ["cannot be read as a state dict"]),
    "checkpoint_nan": ("nan", ["NaN/Inf", "blocks.1.mlp.fc1.weight"]),
}


# Every bad input above is run by tests/test_bad_inputs.py (the catalogue).


# -- a failed run removes only what it created (never a folder that existed before it) ---------------------------
@pytest.mark.parametrize("where", ["own_folder", "outputs_like", "nested_new"])
def test_failed_run_keeps_preexisting_folders(tmp_path, monkeypatch, capsys, where):
    """`hydra.run.dir` pointing at a folder with user files: the error is reported, every file stays; a new
    nested folder is removed up to the topmost folder the run created, and its existing parent stays."""
    precious = tmp_path / "precious"
    (precious / "earlier_run").mkdir(parents=True)
    (precious / "notes.txt").write_text("x")
    (precious / "earlier_run" / "results.json").write_text("{}")
    run_dir = {"own_folder": precious, "outputs_like": precious / "earlier_run",
               "nested_new": precious / "new" / "deeper"}[where]
    code, _, err = run_in_process([*FAST, "bits.w=1", "quantizer=ptq4vit", f"hydra.run.dir={run_dir}"],
                                  monkeypatch, capsys)
    assert_one_line_error(code, err, "bits.w=1")
    assert (precious / "notes.txt").read_text() == "x"
    assert (precious / "earlier_run" / "results.json").read_text() == "{}"
    if where == "nested_new":
        assert not (precious / "new").exists()
        assert "existed before" not in err
    else:
        assert run_dir.is_dir() and f"log: {run_dir / 'run.log'}" in err


def test_failed_run_in_empty_existing_folder_keeps_it(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_in_process([*FAST, "bits.w=1", "quantizer=ptq4vit", f"hydra.run.dir={empty}"], monkeypatch,
                                  capsys)
    assert_one_line_error(code, err, "bits.w=1")
    assert empty.is_dir()


@pytest.mark.slow
def test_run_py_subprocess_failure_in_checkout_keeps_it(tmp_path):
    """`hydra.run.dir=.` (the folder the command runs in) once removed the whole checkout: a copy of run.py in a
    scratch folder stands for it."""
    import shutil

    work = tmp_path / "checkout"
    work.mkdir()
    shutil.copy(ROOT / "run.py", work / "run.py")
    shutil.copytree(ROOT / "conf", work / "conf")
    (work / "keep.txt").write_text("x")
    proc = subprocess.run([sys.executable, "run.py", "bits.w=1", "hydra.run.dir=.", "logger=none"], cwd=work,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, "bits.w=1", "existed before")
    assert (work / "keep.txt").read_text() == "x" and (work / "run.py").is_file() and (work / "conf").is_dir()


def test_timm_name_as_model_option_is_a_deprecated_alias(monkeypatch, capsys):
    """`model=<timm name>` runs the short config of that model, with a warning; the alias table is the `name:` of
    the conf/model files, and no alias file exists beside them."""
    from ptq.cli import model_aliases, replace_model_aliases

    aliases = model_aliases()
    assert aliases["vit_small_patch16_224"] == "vit_s_224"
    assert aliases["swin_base_patch4_window12_384.ms_in22k_ft_in1k"] == "swin_b_384"
    assert not any((ROOT / "conf" / "model" / f"{alias}.yaml").exists() for alias in aliases)
    with pytest.warns(FutureWarning, match="model=deit_small_patch16_224 is deprecated: use model=deit_s_224"):
        assert replace_model_aliases(["model=fmnist_vit,deit_small_patch16_224", "model.name=vit_tiny_patch16_224",
                                      "bits=w8a8"]) == ["model=fmnist_vit,deit_s_224",
                                                        "model.name=vit_tiny_patch16_224", "bits=w8a8"]
    with pytest.warns(FutureWarning, match="model=vit_small_patch32_224 is deprecated: use model=vit_s32_224"):
        code, out, err = run_in_process(["model=vit_small_patch32_224", "--cfg", "job"], monkeypatch, capsys)
    assert code in (0, None), err
    assert "name: vit_small_patch32_224.augreg_in21k_ft_in1k" in out


def test_aliases_are_not_listed_as_options(monkeypatch, capsys):
    code, _, err = run_in_process(["model=foo"], monkeypatch, capsys)
    assert_one_line_error(code, err, "unknown model 'foo'", "vit_s_224")
    assert "vit_small_patch16_224" not in err
