"""Fault tests (issue 14), run.py as subprocesses: SIGKILL and Ctrl-C (SIGINT) in the middle of a job and during
W&B logging, then resume -> every job ok exactly once with its complete W&B record; two concurrent sweeps into one
folder -> every job run once, every file valid."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptq.results_file import read_results
from tests.test_cli import ROOT, _env

pytestmark = pytest.mark.slow
GRID = ["-m", "quantizer=fp32", "progress=false", "model.checkpoint=null", "hydra.sweep.subdir=job${hydra.job.num}"]


def start(sweep: Path, grid: str = "data.max_test=200,210", wandb: bool = True) -> subprocess.Popen:
    """run.py in its own process group (a kill or Ctrl-C reaches W&B's helper process too, as in a terminal)."""
    env = dict(_env(), WANDB_MODE="offline" if wandb else "disabled")
    logger = ["logger=wandb"] if wandb else ["logger=none"]
    return subprocess.Popen([sys.executable, "run.py", *GRID, *logger, f"hydra.sweep.dir={sweep}", grid], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def interrupt_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 120) -> str:
    """Send `sig` to the run's process group as soon as `ready()` holds; returns the run's output."""
    end = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before the fault: {proc.stdout.read()[-2000:]}"
        assert time.time() < end, "the fault point was never reached"
        time.sleep(0.01)
    os.killpg(proc.pid, sig)
    out = proc.communicate(timeout=120)[0]
    if sig == signal.SIGINT:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # W&B's helper, should it outlive the interrupted run
        except ProcessLookupError:
            pass
    return out


def wandb_state(job: Path) -> str | None:
    data, _ = read_results(job / "results.json")
    return (data.get("wandb") or {}).get("state") if data else None


def complete_wandb_runs(job: Path) -> list[Path]:
    """Offline W&B runs of the job holding its summary (the record W&B writes when the run finishes)."""
    return [run for run in (job / "wandb").glob("offline-run-*")
            if any(b"top1_fp32" in f.read_bytes() for f in run.glob("run-*.wandb"))]


def test_kill_and_interrupt_then_resume(tmp_path):
    sweep = tmp_path / "sweep"
    job0, job1 = sweep / "job0", sweep / "job1"
    # 1. SIGKILL in the middle of job 0: no results file is left
    interrupt_when(start(sweep), lambda: (job0 / ".job.lock").exists(), signal.SIGKILL)
    assert not (job0 / "results.json").exists()
    # 2. SIGKILL while job 0 is being logged to W&B: results say the W&B record is still pending
    interrupt_when(start(sweep), lambda: any((job0 / "wandb").glob("offline-run-*")), signal.SIGKILL)
    assert wandb_state(job0) == "pending"
    # 3. Ctrl-C in the middle of job 1; job 0 was logged again from its results.json before
    out = interrupt_when(start(sweep), lambda: (job1 / ".job.lock").exists(), signal.SIGINT)
    assert wandb_state(job0) == "done", out[-2000:]
    assert not (job1 / "results.json").exists()
    # 4. Ctrl-C while job 1 is being logged
    interrupt_when(start(sweep), lambda: any((job1 / "wandb").glob("offline-run-*")), signal.SIGINT)
    assert wandb_state(job1) in ("pending", "failed")
    # 5. resume: every job ok once, each with one complete W&B record
    proc = start(sweep)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "multirun" in out and "2 jobs, 2 ok, 0 failed" in out
    for job in (job0, job1):
        data, problem = read_results(job / "results.json")
        assert problem is None and data["status"] == "ok" and data["wandb"]["state"] == "done"
        assert len(complete_wandb_runs(job)) == 1 and list((job / "wandb").glob("offline-run-*")) == \
            complete_wandb_runs(job)  # the incomplete attempts are renamed aside
        assert list((job / "wandb").glob("incomplete-offline-run-*"))
        assert not list(job.glob("results.json.rejected-*"))
    assert out.count("skipped (force=true re-runs)") == 2


def test_two_concurrent_sweeps_run_every_job_once(tmp_path):
    sweep = tmp_path / "sweep"
    procs = [start(sweep, "data.max_test=200,210,220", wandb=False) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    both = "".join(outs)
    assert both.count("fmnist_vit (") == 3  # each job evaluated the model once, in one of the sweeps
    assert both.count("skipped (force=true re-runs)") == 3  # ... and the other sweep found its results
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 3
    for job in jobs:
        data, problem = read_results(job / "results.json")
        assert problem is None and data["status"] == "ok"
        assert sorted(p.name for p in job.iterdir() if not p.name.startswith(".")) == ["results.json", "run.log"]
    assert not [p for p in sweep.rglob("*.tmp")] and not [p for p in sweep.rglob(".job.lock")]
