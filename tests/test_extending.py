"""docs/extending.md's worked examples run as written: its quantizer file registers, passes the registry
contract, and its YAML composes into a method that calibrates the test-bed ViT with power-of-two weight scales;
its whole method (a stage, a preset, its names) runs from those three new files alone."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import ROOT
from test_contracts import check_quantizer_contract

DOC = ROOT / "docs" / "extending.md"


def doc_block(marker: str) -> str:
    """The fenced code block right after `<!-- extending:marker -->` in docs/extending.md."""
    m = re.search(rf"<!-- extending:{marker} -->\s*```\w+\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"no block after extending:{marker} in {DOC}"
    return m.group(1)


@pytest.fixture
def pot_quantizer():
    from ptq.quantizers import QUANTIZERS

    namespace: dict = {}
    exec(compile(doc_block("quantizer"), "pot_uniform.py", "exec"), namespace)  # noqa: S102 - our own doc's code
    yield QUANTIZERS["pot_uniform"]
    del QUANTIZERS["pot_uniform"]


def test_doc_quantizer_passes_the_contract(pot_quantizer):
    check_quantizer_contract("pot_uniform")
    q = pot_quantizer(4, __import__("ptq.quantizers", fromlist=["Layout"]).Layout())
    # scale 0.3 -> 2^round(log2 0.3) = 2^-2 = 0.25: codes round(x / 0.25) clamped to -8..7
    x = torch.tensor([-3.0, -0.3, 0.1, 0.13, 1.0, 5.0])
    assert torch.equal(q.fake(x, torch.tensor([0.3])), torch.tensor([-2.0, -0.25, 0.0, 0.25, 1.0, 1.75]))


def test_doc_method_yaml_calibrates(pot_quantizer, tmp_path, compose):
    (tmp_path / "quantizer").mkdir()
    (tmp_path / "quantizer" / "ptq4vit_pot.yaml").write_text(doc_block("yaml"))
    cfg = compose(["quantizer=ptq4vit_pot", f"hydra.searchpath=[file://{tmp_path}]", "calib.n_images=2",
                   "quantizer.search.n=4", "quantizer.search.rounds=1", "data.max_test=64", "logger=none",
                   "progress=false", "bits=w4a4"])
    from ptq.app import run

    results = run(cfg, tmp_path / "run")
    assert results["status"] == "ok" and results["ptq_config"]["slots"]["weight"]["quantizer"] == "pot_uniform"
    import json

    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "quant_params.safetensors"), framework="pt") as f:
        kinds = {k: v["kind"] for k, v in json.loads(f.metadata()["quantizers"]).items()}
    weights = {k: v for k, v in kinds.items() if k.endswith(".weight") and "patch_embed" not in k}
    assert len(weights) == 4 * 4 + 1 and set(weights.values()) == {"pot_uniform"}  # 4 linears per block + head
    assert kinds["patch_embed.proj.weight"] == "uniform" and kinds["blocks.0.mlp.fc2.input"] == "twin_gelu"


def test_doc_method_names_label_the_method(tmp_path, monkeypatch):
    """The page's `ptq/methods/ptq4vit_pot.yaml` block, dropped beside the shipped method files, names the method
    in reports and places it after PTQ4ViT."""
    import shutil

    from ptq import methods

    folder = tmp_path / "methods"
    shutil.copytree(methods.METHODS_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "ptq4vit_pot.yaml").write_text(doc_block("names"))
    monkeypatch.setattr(methods, "METHODS_DIR", folder)
    methods.methods.cache_clear()
    try:
        labels = methods.method_labels()
    finally:
        methods.methods.cache_clear()
    assert labels["ptq4vit_pot"] == "PTQ4ViT-PoT"
    assert list(labels)[list(labels).index("ptq4vit") + 1] == "ptq4vit_pot"


WHOLE_METHOD_FILES = {"stage": "ptq/quant/stages/weight_mse_init.py", "stage_yaml": "conf/quantizer/minmax_omse.yaml",
                      "stage_names": "ptq/methods/minmax_omse.yaml"}


def _brute_force_scale(w: np.ndarray, bits: int, fractions: np.ndarray) -> float:
    """The per-tensor scale among fractions x max|w| / (2^(b-1) - 0.5) with the lowest squared error of
    clip(round_half_even(w / s), -2^(b-1), 2^(b-1) - 1) s, by NumPy (independent of the lab's quantizers)."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    scales = fractions * np.abs(w).max() / (2 ** (bits - 1) - 0.5)
    errors = [((np.clip(np.round(w / s), lo, hi) * s - w) ** 2).sum() for s in scales]
    return float(scales[int(np.argmin(errors))])


def test_doc_whole_method_runs_from_its_own_files(tmp_path):
    """The page's whole method (a stage module, its preset, its names), added as three new files to a copy of the
    package and the config tree and nothing else, runs as a job (run.py in a subprocess): the stage ran, it chose
    the scales a NumPy brute force chooses, and the report labels the method."""
    import os
    import shutil
    import subprocess
    import sys

    from safetensors import safe_open
    from safetensors.numpy import load_file

    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("ptq", "conf", "checkpoints"):
        shutil.copytree(ROOT / part, tree / part, ignore=ignore)
    shutil.copy(ROOT / "run.py", tree / "run.py")
    for marker, rel in WHOLE_METHOD_FILES.items():
        assert not (tree / rel).exists(), f"{rel} exists already: the example must add new files only"
        (tree / rel).write_text(doc_block(marker))
    env = {**os.environ, "PYTHONPATH": str(tree), "WANDB_MODE": "disabled"}
    run_dir = tmp_path / "runs" / "omse"
    job = subprocess.run([sys.executable, "run.py", "quantizer=minmax_omse", "bits=w4a4", "data.max_test=64",
                          "calib.n_images=4", "logger=none", "progress=false", "threads=1",
                          f"hydra.run.dir={run_dir}"], cwd=tree, env=env, capture_output=True, text=True,
                         timeout=300)
    assert job.returncode == 0, job.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["calibration"]["stages"] == ["init_minmax", "weight_mse_init"]
    assert "stage_weight_mse_init" in results["calibration"]["seconds"]

    weights = load_file(str(ROOT / "checkpoints" / "fmnist_vit.safetensors"))
    fractions = np.linspace(0.5, 1.0, 11)
    shrunk = 0
    with safe_open(str(run_dir / "quant_params.safetensors"), framework="np") as saved:
        for layer in ("blocks.0.mlp.fc1", "blocks.1.attn.proj", "blocks.2.mlp.fc2", "head"):   # per-tensor weights
            expected = _brute_force_scale(weights[f"{layer}.weight"].astype(np.float64), 4, fractions)
            got = float(saved.get_tensor(f"{layer}.weight.param")[0])
            assert got == pytest.approx(expected, rel=1e-5), layer
            shrunk += expected < np.abs(weights[f"{layer}.weight"]).max() / 7.5 * (1 - 1e-6)
    assert shrunk >= 1   # the stage changed what min-max alone would have chosen

    report = subprocess.run([sys.executable, "-m", "ptq.report", str(run_dir.parent)], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "MinMax-OMSE W4A4" in report.stdout
