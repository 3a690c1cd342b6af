"""A real multirun of run.py as a subprocess (float model, 200 test images): an experiment file runs, reuses
equivalent jobs, records a failing job and goes on, resumes on the second call; ptq.report reads the folder."""
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


def run_py(*args: str, code: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", HYDRA_FULL_ERROR="1")
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))}


def test_experiment_runs_reuses_fails_and_resumes(tmp_path, capsys):
    sweep = tmp_path / "table1"
    # No -m: the experiment sets hydra.mode MULTIRUN. fp32 x {w8a8, w6a6} x two checkpoints: a random-init model
    # (null) and a missing file, so half of the jobs fail.
    cmd = ["experiment=table1", "quantizer=fp32", "model.checkpoint=null,missing.safetensors", "data.max_test=200",
           "logger=none", "progress=false", f"hydra.sweep.dir={sweep}"]
    proc = run_py(*cmd, code=3)  # some jobs failed: a multirun exits non-zero, with a summary line
    assert f"multirun {sweep}: 4 jobs, 2 ok, 2 failed: " in proc.stderr
    first = results(sweep)
    assert len(first) == 4 and all(n.startswith("bits=w") and "quantizer=fp32" in n for n in first)  # overrides
    ok = {n: r for n, r in first.items() if r["status"] == "ok"}
    failed = {n: r for n, r in first.items() if r["status"] == "failed"}
    assert sorted(ok) == [n for n in first if "checkpoint=null" in n]  # the sweep went on after each failure
    assert all("missing.safetensors" in r["error"] for r in failed.values()) and len(failed) == 2
    # fp32 ignores bits: the W6A6 job reuses the W8A8 job's results
    copy = ok[next(n for n in ok if "bits=w6a6" in n)]
    assert copy["duplicate_of"] == next(n for n in ok if "bits=w8a8" in n)
    assert copy["top1"] == ok[copy["duplicate_of"]]["top1"] and copy["config"]["bits"]["w"] == 6
    stamps = {n: (sweep / n / "results.json").stat().st_mtime_ns for n in ok}

    proc = run_py(*cmd, code=3)  # the same command again: the finished jobs are skipped, the failed ones retried
    assert {n: (sweep / n / "results.json").stat().st_mtime_ns for n in ok} == stamps
    assert (proc.stdout + proc.stderr).count("skipped (force=true re-runs)") == 2
    assert [r["status"] for r in results(sweep).values()].count("failed") == 2

    assert report.main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "4 jobs: 2 ok (1 reusing a sibling's results), 2 failed" in printed
    assert "### Failed jobs" in printed and "missing.safetensors" in printed and "| fmnist_vit " in printed
    assert (tmp_path / "report" / "failed.csv").is_file()
