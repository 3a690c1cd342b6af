"""The notebooks (jupytext percent files in notebooks/) run under nbmake with parameters pointing at small inputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.results_factory import write_job

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
pytestmark = pytest.mark.slow


def to_ipynb(source: Path, params: dict, dest: Path) -> Path:
    """The percent file as an .ipynb with a cell assigning `params` right after its `parameters` cell (as
    papermill injects them)."""
    import jupytext
    from nbformat.v4 import new_code_cell

    nb = jupytext.read(source)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    code = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(at + 1, new_code_cell(code, metadata={"tags": ["injected-parameters"]}))
    path = dest / f"{source.stem}.ipynb"
    jupytext.write(nb, path, fmt="ipynb")
    return path


def run_nbmake(notebook: Path, timeout: int = 120) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbmake", "-q", "-p", "no:cacheprovider",
                           f"--nbmake-timeout={timeout}", str(notebook)], cwd=notebook.parent, env=env,
                          capture_output=True, text=True, timeout=timeout + 60)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def synthetic_sweeps(root: Path) -> list[Path]:
    t1, abl, met = root / "table1", root / "ablation", root / "metrics"
    write_job(t1 / "fp", "fmnist_vit", "fp32", 8, 90.0)
    for q, tops in (("base_ptq", (89.0, 80.0)), ("ptq4vit", (89.6, 86.0))):
        for bits, top1 in zip((8, 6), tops):
            write_job(t1 / f"{q}{bits}", "fmnist_vit", q, bits, top1)
    for metric in ("cosine", "hessian"):
        for st in (False, True):
            for bits in (8, 6):
                write_job(abl / f"{metric}{st}{bits}", "fmnist_vit", "ptq4vit", bits,
                          80 + bits + (metric == "hessian") + 2 * st, metric=metric, twin_softmax=st)
    for metric, grad, top1 in (("mse", None, 70.0), ("cosine", None, 74.0), ("hessian", "kl_self", 71.0),
                               ("hessian", "pseudo_ce", 78.0)):
        for bits in (6, 4):
            write_job(met / f"{metric}{grad}{bits}", "fmnist_vit", "ptq4vit", bits, top1 + 2 * bits,
                      metric=metric, grad=grad)
    return [t1, abl, met]


def test_ablation_plots_notebook(tmp_path):
    sweeps = synthetic_sweeps(tmp_path / "multirun")
    out = tmp_path / "plots"
    nb = to_ipynb(NOTEBOOKS / "ablation_plots.py",
                  {"SWEEP_DIRS": [str(p) for p in sweeps], "OUT_DIR": str(out), "ROOT": str(ROOT)}, tmp_path)
    run_nbmake(nb)
    assert sorted(p.name for p in out.glob("*.png")) == [
        "ablation_switches.png", "accuracy_vs_bits_ablation.png", "accuracy_vs_bits_metrics.png",
        "accuracy_vs_bits_table1.png", "metric_comparison.png"]


def test_metric_fidelity_notebook(tmp_path):
    out = tmp_path / "fidelity"
    params = {"CHECKPOINT": None, "LAYERS": ["blocks.0.mlp.fc1"], "N_IMAGES": 8, "SEARCH_N": 10,
              "GRADS": ["kl_self", "pseudo_ce"], "OUT_DIR": str(out), "ROOT": str(ROOT)}
    run_nbmake(to_ipynb(NOTEBOOKS / "metric_fidelity.py", params, tmp_path))
    assert sorted(p.name for p in out.iterdir()) == ["fidelity_blocks_0_mlp_fc1.png", "spearman.csv", "spearman.md",
                                                     "spearman.png"]
    table = (out / "spearman.md").read_text()
    for metric in ("mse", "l1", "cosine", "pearson", "hessian (kl_self)", "hessian (pseudo_ce)"):
        assert f"| {metric} " in table
