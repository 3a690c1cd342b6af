"""Simulated against deployed accuracy of finished deployable runs (python -m ptq.export RUN_DIR --parity on each).

    python experiments/export/deploy_table.py RUN_DIR [RUN_DIR ...] [--threads 1]

Writes experiments/export/deploy.md / deploy.csv: per run, the model and method, the simulated top-1 (the rebuilt
model, on the same test images), the ONNX Runtime top-1, agreement with the simulated and the float model, the
largest |logit difference|, integer kernels against the quantized linears + attention matmuls, and the int8
speed-up over float ONNX Runtime at batch 1 / 32 from benchmark.csv (same machine, benchmark.py).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from ptq.export.__main__ import export_run, parity

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-test", type=int, default=None, help="the first N test images only (default: the run's)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    speed = {}
    if (HERE / "benchmark.csv").exists():
        for r in csv.DictReader(open(HERE / "benchmark.csv")):
            speed[(r["model"], r["batch"])] = r["speedup"]
    rows = []
    for run in args.runs:
        res = json.loads((run / "results.json").read_text())
        path, cfg, model, _ = export_run(run)
        rep = parity(path, cfg, model, args.max_test, threads=args.threads)
        (run / "export.json").write_text(json.dumps(rep, indent=2) + "\n")
        m = res["model"]
        rows.append({"model": m, "method": f"{res['quantizer']} W{res['bits_w']}A{res['bits_a']}",
                     "num_test": rep["num_test"], "top1_fp32": round(rep["top1_fp32"], 2),
                     "top1_simulated": round(rep["top1_simulated"], 2), "top1_onnx": round(rep["top1_onnx"], 2),
                     "agreement_simulated": round(rep["agreement_simulated"], 2),
                     "agreement_fp32": round(rep["agreement_fp32"], 2),
                     "max_abs_logit_diff": round(rep["max_abs_logit_diff"], 4),
                     "integer_kernels": f"{sum(rep['integer_kernels'].values())} / "
                                        f"{rep['quantized_linears'] + rep['quantized_matmuls']}",
                     "speedup_b1": speed.get((m, "1"), "—"), "speedup_b32": speed.get((m, "32"), "—")})
        print(rows[-1], flush=True)
    with open(HERE / "deploy.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    head = ("| model | method | test images | FP32 top-1 | simulated top-1 | ONNX Runtime top-1 | agreement with "
            "simulated | agreement with FP32 | max abs logit diff | integer kernels / quantized matmuls | "
            "int8 speed-up b1 | b32 |")
    lines = ["# Deployed (ONNX Runtime, CPU, int8 kernels) against simulated", "", head,
             "|" + "---|" * 12]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    (HERE / "deploy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
