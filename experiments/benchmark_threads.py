"""Two parallel jobs under the joblib launcher, with the launcher's thread split and without (issue 14, item 7).

    python experiments/benchmark_threads.py       # writes experiments/benchmark_threads.md

Each setting is one `run.py -m hydra/launcher=joblib hydra.launcher.n_jobs=2` sweep of two test-bed PTQ4ViT W4A4
jobs (calib.seed=1,2; 32 calibration images, 500 test images): `threads=null` gives each job
available cores // 2 torch threads (the split), `threads=<cores>` gives each job every core (no split, the
oversubscription the issue measured). Reported: each job's calibration seconds (results.json) and the sweep's
wall-clock seconds, with the machine's load average before and after (other processes share the cores).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ptq.env import available_cores

ROOT = Path(__file__).resolve().parents[1]

JOB = ["model=fmnist_vit", "quantizer=ptq4vit", "bits=w4a4", "calib.n_images=32", "data.max_test=500",
       "logger=none", "progress=false", "calib.seed=1,2"]


def sweep(threads: str, folder: Path) -> dict:
    """Run the two-job sweep; returns wall seconds, per-job calibration seconds and the load averages."""
    load_before = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.run([sys.executable, "run.py", "-m", *JOB, f"threads={threads}", "hydra/launcher=joblib",
                           "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={folder}"], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, WANDB_MODE="disabled"), timeout=1200)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed: {proc.stderr[-2000:]}")
    print(proc.stderr.strip().splitlines()[-1], flush=True)  # the multirun's summary line
    results = [json.loads(p.read_text()) for p in sorted(folder.rglob("results.json"))]
    return {"wall": wall, "calib": [r["calib_seconds"] for r in results], "load": (load_before, os.getloadavg()[0]),
            "threads": sorted({r["env"]["torch_threads"] for r in results})}


def main() -> None:
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()   # no options; --help
    cores = available_cores()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, threads in ((f"split: threads=null ({max(1, cores // 2)} per job)", "null"),
                               (f"no split: threads={cores} per job", str(cores))):
            r = sweep(threads, Path(tmp) / threads)
            calib = " / ".join(f"{c:.1f}" for c in r["calib"])
            rows.append(f"| {label} | {', '.join(map(str, r['threads']))} | {calib} | {r['wall']:.1f} | "
                        f"{r['load'][0]:.1f} → {r['load'][1]:.1f} |")
            print(rows[-1], flush=True)
    text = "\n".join([
        "# Two parallel jobs: the launcher's thread split vs. none",
        "",
        f"`python experiments/benchmark_threads.py`; {cores} cores available to the process; two test-bed "
        "PTQ4ViT W4A4 jobs (32 calibration images, 500 test images) run at once by the joblib launcher "
        "(n_jobs=2).",
        "",
        "| setting | torch threads in each job (results.json) | calibration s (job 1 / job 2) | sweep wall s | "
        "load average before → after |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "The load average shows what else ran on the machine meanwhile; a load above the core count means other",
        "processes shared the cores and the numbers include their interference.",
        "",
    ])
    (ROOT / "experiments" / "benchmark_threads.md").write_text(text)


if __name__ == "__main__":
    main()
