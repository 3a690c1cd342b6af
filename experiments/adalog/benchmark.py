"""AdaLog calibration time on the test-bed ViT: ours against the reference code's, on the same CPU cores (issue 12).

    python experiments/adalog/benchmark.py [--threads 1 2] [--repeat 3] [--bits 4] [--compat official]
    # writes experiments/adalog/benchmark.md and benchmark.csv

Ours: `quantize_model` with quantizer=adalog on fmnist_vit, the lab's 32 calibration images, timed around the
calibration only (wall and process CPU seconds, torch threads as given), then top-1 and agreement on the full test
split. The reference: GoatWu/AdaLog (commit 75a57d2) run outside this repository by a harness that feeds it the
same model and the same 32 images on CPU (nothing of it is in the lab; see README "Methods" and
experiments/adalog/reference_check.md); its measured rows are `reference_timing.csv`, read here and printed beside
ours. Both are one measurement each on a shared 2-core machine: the load average before and after is recorded.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
import torch

EXTRA: list[str] = []   # more overrides (--override KEY=VALUE)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def ours(bits: int, compat: str, threads: int) -> dict:
    from hydra import compose, initialize_config_dir

    import ptq.plugins  # noqa: F401  (the plug-in stages: recon)
    from ptq.data import build_data
    from ptq.evaluate import evaluate_logits
    from ptq.models import build_model
    from ptq.quant import quantize_model, resolve_ptq_config

    torch.set_num_threads(threads)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=["quantizer=adalog", f"bits=w{bits}a{bits}", f"quantizer.compat={compat}",
                                           "logger=none", "model=fmnist_vit", *EXTRA])
    model = build_model(cfg.model)
    data = build_data(cfg, model)
    with torch.no_grad():
        fp_logits, _ = evaluate_logits(model, data.test_batches(256), progress=False)
    load0 = os.getloadavg()[0]
    t0, c0 = time.time(), time.process_time()
    quantize_model(model, resolve_ptq_config(cfg), data.calib_images, data.calib_labels, progress=False)
    wall, cpu = time.time() - t0, time.process_time() - c0
    load1 = os.getloadavg()[0]
    with torch.no_grad():
        logits, labels = evaluate_logits(model, data.test_batches(256), progress=False)
    top1 = (logits.argmax(1) == labels).float().mean().item() * 100
    agree = (logits.argmax(1) == fp_logits.argmax(1)).float().mean().item() * 100
    return {"implementation": "lab (ptq/quant/stages/adalog.py)", "bits": f"W{bits}A{bits}", "compat": compat,
            "threads": threads, "calib_wall_s": round(wall, 1), "calib_cpu_s": round(cpu, 1), "top1": round(top1, 2),
            "agreement": round(agree, 2), "load_before": round(load0, 2), "load_after": round(load1, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--compat", default="official")
    p.add_argument("--repeat", type=int, default=1, help="runs per thread count (this VM's wall times vary)")
    p.add_argument("--override", nargs="*", default=[], help="more config overrides, e.g. calib.chunk_mb=32")
    args = p.parse_args()
    EXTRA.extend(args.override)
    rows = [ours(args.bits, args.compat, t) for t in args.threads for _ in range(args.repeat)]
    for r in rows:
        print(r, flush=True)
    ref = pd.read_csv(HERE / "reference_timing.csv")
    table = pd.concat([ref, pd.DataFrame(rows)], ignore_index=True)
    table.to_csv(HERE / "benchmark.csv", index=False)
    best_ref = ref["calib_wall_s"].min()
    lines = ["# AdaLog calibration time: the lab vs. the reference code (fmnist_vit, 4 blocks, 2 CPU cores)", "",
             "`python experiments/adalog/benchmark.py` (ours; the reference rows come from reference_timing.csv, "
             "measured by the out-of-repository harness described in reference_check.md). One measurement each on "
             "a shared machine; the load average is the 1-minute one before and after the calibration.", "",
             table.to_markdown(index=False), "",
             "Speed-up over the fastest reference row (wall seconds), per thread count: median (slowest) of the "
             "lab's runs: " + ", ".join(
                 f"{t} thread(s): {best_ref / w.median():.1f}x ({best_ref / w.max():.1f}x)"
                 for t, w in pd.DataFrame(rows).groupby("threads")["calib_wall_s"]), ""]
    (HERE / "benchmark.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
