"""Real multiruns of run.py as subprocesses (float model, 200 test images): an experiment file runs, resumes, reuses
equivalent jobs, records a failing job and goes on; ptq.report reads the folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ptq import report

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
# Random-init test-bed ViT (no trained checkpoint needed), float model, 200 test images, no logger.
TINY = ["data.max_test=200", "logger=none", "progress=false", "model.checkpoint=null"]


def run_py(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", HYDRA_FULL_ERROR="1")
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))}


def test_experiment_runs_resumes_and_reuses(tmp_path):
    sweep = tmp_path / "table1"
    cmd = ["experiment=table1", "quantizer=fp32", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}"]
    run_py(*cmd)  # no -m: the experiment sets hydra.mode MULTIRUN; fp32 x {w8a8, w6a6} x seed {0, 1}
    first = results(sweep)
    assert len(first) == 4 and all(r["status"] == "ok" for r in first.values())
    assert all(name.startswith("bits=w") and "quantizer=fp32" in name for name in first)  # subdir = overrides
    copies = {n: r["duplicate_of"] for n, r in first.items() if "duplicate_of" in r}
    assert sorted(copies) == [n for n in first if "bits=w6a6" in n]  # fp32 ignores bits: W6A6 reuses W8A8
    assert all(first[src]["top1"] == first[n]["top1"] for n, src in copies.items())
    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("*/results.json")}

    proc = run_py(*cmd)  # the same command again: every job skipped
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/results.json")} == stamps
    assert (proc.stdout + proc.stderr).count("skipped (force=true re-runs)") == 4

    rep = report.build_report([sweep])
    assert rep["layout"] == "main" and len(rep["failed"]) == 0
    assert rep["table"].display["model"].tolist() == ["fmnist_vit"]


def test_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    sweep = tmp_path / "fail"
    # joblib, 2 workers: each gets cores // 2 threads (at least 1); one job has a missing checkpoint
    run_py("-m", "quantizer=fp32", *TINY[:-1], "model.checkpoint=null,missing.safetensors",
           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}")
    got = results(sweep)
    assert sorted(r["status"] for r in got.values()) == ["failed", "ok"]
    failed = next(r for r in got.values() if r["status"] == "failed")
    assert "missing.safetensors" in failed["error"] and failed["config"]["model"]["checkpoint"] == "missing.safetensors"
    ok = next(r for r in got.values() if r["status"] == "ok")
    assert ok["env"]["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)

    assert report.main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "2 jobs: 1 ok" in printed and "### Failed jobs" in printed and "missing.safetensors" in printed
    assert (tmp_path / "report" / "failed.csv").is_file()
