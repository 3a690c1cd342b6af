"""Simulated against deployed accuracy and int8 speed of finished runs, deployable or not, in one table.

    python experiments/export/deploy_table.py RUN_DIR [RUN_DIR ...] [--threads 1] [--max-test N] [--n1 30 --n32 5]
                                              [--out PATH]

Per deployable run (python -m ptq.export RUN_DIR --parity on each, RUN_DIR/export.json): the simulated top-1 (the
model rebuilt from the run folder, on the same test images), the ONNX Runtime top-1, agreement with the simulated
and the float model, the largest |logit difference|, integer kernels against the quantized linears + attention
matmuls, and the speed-up of the run's own int8 graph over the float model's ONNX graph (same session options,
float / int8 interleaved, median of N at batch 1 and 32, 1-minute load average per row). A non-deployable run gets
its results.json top-1 and the slots that are simulation only (its refusal), nothing exported. Writes deploy.md /
deploy.csv beside this file (or PATH.md / PATH.csv).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ptq.export import write_onnx
from ptq.export.__main__ import export_run, parity
from ptq.export.runtime import interleaved_medians, session
from ptq.models import build_model

HERE = Path(__file__).resolve().parent
COLUMNS = ("model", "preset", "recon", "bits", "test images", "FP32 top-1", "simulated top-1", "ONNX Runtime top-1",
           "agreement with simulated", "agreement with FP32", "max abs logit diff",
           "integer kernels / quantized matmuls", "int8 speed-up b1", "b32", "load", "deployable")


def speedups(path: Path, cfg, threads: int, n1: int, n32: int) -> tuple[dict[int, float], str]:
    """fp32 / int8 median time at batch 1 and 32 (the float model's graph against the run's), and the load."""
    model = build_model(cfg.model, "cpu").eval()
    shape = tuple(model.default_cfg["input_size"])
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        fpath = write_onnx(model, torch.zeros(1, *shape), Path(d) / "fp32.onnx")
        sessions = {"fp32": session(fpath, threads), "int8": session(path, threads)}
        out = {}
        for batch, n in ((1, n1), (32, n32)):
            x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
            med = interleaved_medians(sessions, x, n)
            out[batch] = round(med["fp32"] / med["int8"], 2)
    return out, f"{load0:.1f} / {os.getloadavg()[0]:.1f}"


def row_of(run: Path, args) -> dict:
    res = json.loads((run / "results.json").read_text())
    conf = res["config"]
    base = {"model": res["model"], "preset": res["quantizer"], "recon": (conf.get("recon") or {}).get("name", "none"),
            "bits": f"W{res['bits_w']}A{res['bits_a']}"}
    dep = res.get("deployability") or {}
    if dep.get("deployable") is False:
        why = "; ".join(f"{slot}: {r.replace(' (simulation only)', '')}"
                        for slot, r in sorted(dep["simulation_only"].items()))
        return {**base, "test images": res["num_test"], "FP32 top-1": round(res["top1_fp32"], 2),
                "simulated top-1": round(res["top1"], 2), **{c: "—" for c in COLUMNS[7:15]},
                "deployable": f"no ({why})"}
    path, cfg, model, _ = export_run(run)
    rep = parity(path, cfg, model, args.max_test, threads=args.threads)
    (run / "export.json").write_text(json.dumps(rep, indent=2) + "\n")
    speed, load = speedups(path, cfg, args.threads, args.n1, args.n32)
    return {**base, "test images": rep["num_test"], "FP32 top-1": round(rep["top1_fp32"], 2),
            "simulated top-1": round(rep["top1_simulated"], 2), "ONNX Runtime top-1": round(rep["top1_onnx"], 2),
            "agreement with simulated": round(rep["agreement_simulated"], 2),
            "agreement with FP32": round(rep["agreement_fp32"], 2),
            "max abs logit diff": round(rep["max_abs_logit_diff"], 4),
            "integer kernels / quantized matmuls": f"{sum(rep['integer_kernels'].values())} / "
                                                   f"{rep['quantized_linears'] + rep['quantized_matmuls']}",
            "int8 speed-up b1": f"{speed[1]}x", "b32": f"{speed[32]}x", "load": load, "deployable": "yes"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-test", type=int, default=None, help="the first N test images only (default: the run's)")
    p.add_argument("--n1", type=int, default=30, help="timed runs at batch 1 (each of float and int8)")
    p.add_argument("--n32", type=int, default=5, help="timed runs at batch 32")
    p.add_argument("--out", type=Path, default=HERE / "deploy")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for run in args.runs:
        rows.append(row_of(run, args))
        print(rows[-1], flush=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)
    lines = ["# Deployed (ONNX Runtime, CPU, int8 kernels) against simulated", "",
             f"ONNX Runtime CPU, ORT_ENABLE_ALL, {args.threads} thread(s); speed-up: the float model's ONNX graph / "
             f"the run's int8 graph, interleaved, median of {args.n1} (batch 1) / {args.n32} (batch 32) runs; load: "
             "1-minute load average before / after the row's timing.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
