"""docs/extending.md's worked example runs as written: its quantizer file registers, passes the registry
contract, and its YAML composes into a method that calibrates the test-bed ViT with power-of-two weight scales."""
from __future__ import annotations

import re

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
