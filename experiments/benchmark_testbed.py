"""Benchmark of the quantization core on the embedded test-bed (issue 3): accuracy, fidelity, calibration time
and peak memory of every method, bit width, compat mode, metric and Hessian gradient source.

    python experiments/benchmark_testbed.py                  # full grid, writes experiments/benchmark_testbed.{md,csv}
    python experiments/benchmark_testbed.py --only speed     # just the calibration-speed target row

Every row is one `ptq.app.run` in this process (the float logits are evaluated once per model and cached).
Calibration seconds are wall-clock on this machine; peak memory is the process's resident high-water mark during
calibration (reset before each run).
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from ptq.app import run

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = ["model", "quantizer", "bits", "compat", "metric", "grad", "top1", "drop", "agreement", "kl_fp32",
           "calib_s", "calib_peak_mb"]
# The benchmark's sections, in the order they run and appear in the table, with their headings.
SECTIONS = {"methods": "Methods x bits x compat mode", "metrics": "Metrics (PTQ4ViT paper mode, W6A6)",
            "grads": "Hessian gradient sources (PTQ4ViT paper mode, W6A6)",
            "speed": "Speed target: fmnist_vit PTQ4ViT W6A6, official compat, mse, 32 images (target <= 10 s)"}


def grid(models: list[str], only: str | None) -> list[tuple[str, list[str]]]:
    jobs: list[tuple[str, list[str]]] = []
    speed = ("speed", ["model=fmnist_vit", "quantizer=ptq4vit", "bits=w6a6", "quantizer.compat=official", "metric=mse"])
    if only == "speed":
        return [speed]
    for m in models:
        jobs.append(("methods", [f"model={m}", "quantizer=fp32"]))
        for q in ("base_ptq", "ptq4vit"):
            for b in ("w8a8", "w6a6", "w4a4"):
                for c in ("paper", "official"):
                    jobs.append(("methods", [f"model={m}", f"quantizer={q}", f"bits={b}", f"quantizer.compat={c}"]))
        for metric in ("mse", "l1", "cosine", "pearson", "linear_weighted_l2", "square_weighted_l2"):
            jobs.append(("metrics", [f"model={m}", "quantizer=ptq4vit", "bits=w6a6", f"metric={metric}"]))
        for g in ("kl_self", "kl_quant", "pseudo_ce", "label_ce", "fisher"):
            jobs.append(("grads", [f"model={m}", "quantizer=ptq4vit", "bits=w6a6", "metric=hessian",
                                   f"metric.grad={g}"]))
    return jobs + [speed]


def row(section: str, r: dict) -> dict:
    q = r["quantizer"]
    return {"section": section, "model": r["model"], "quantizer": q,
            "bits": "-" if q == "fp32" else f"W{r['bits_w']}A{r['bits_a']}",
            "compat": "-" if q == "fp32" else r["compat"], "metric": "-" if q == "fp32" else r["metric"],
            "grad": r["grad"] if q != "fp32" and r["metric"] == "hessian" else "-",
            "top1": round(r["top1"], 2), "drop": round(r["drop"], 2), "agreement": round(r["agreement"], 2),
            "kl_fp32": round(r["kl_fp32"], 5), "calib_s": round(r["calib_seconds"], 2),
            "calib_peak_mb": r.get("calib_peak_memory_mb", float("nan"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="fmnist_vit,fmnist_swin")
    ap.add_argument("--only", choices=["speed"], default=None)
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="sections to run, in this order (the others are kept from --merge)")
    ap.add_argument("--merge", default=None, help="a previous CSV whose rows of the sections not run are kept")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "benchmark_testbed"))
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job (e.g. data.max_test=500)")
    args = ap.parse_args()
    rows: list[dict] = []
    sections = args.sections.split(",")
    jobs = sorted((j for j in grid(args.models.split(","), args.only) if j[0] in sections or args.only),
                  key=lambda j: sections.index(j[0]) if j[0] in sections else 0)
    if args.merge:
        rows = [r for r in pd.read_csv(args.merge).to_dict("records") if r["section"] not in sections]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        for section, ov in jobs:
            cfg = compose("config", overrides=ov + ["logger=none", "progress=false"] + args.overrides)
            t0 = time.time()
            r = row(section, run(cfg, None))
            rows.append(r)
            print(f"{section:8s} {' '.join(ov):95s} top1 {r['top1']:6.2f}  calib {r['calib_s']:6.2f}s  "
                  f"({time.time() - t0:.0f}s)", flush=True)
            if args.only is None:  # rewrite after every job: an interrupted run keeps what it measured
                write(rows, args.out, cfg.get("device", "auto"))
    print(Path(args.out + ".md").read_text() if args.only is None else pd.DataFrame(rows)[COLUMNS].to_markdown())


def write(rows: list[dict], out: str, device: str) -> None:
    order = {section: i for i, section in enumerate(SECTIONS)}
    df = pd.DataFrame(rows)
    df = df.iloc[sorted(range(len(df)), key=lambda i: (order.get(df.section.iloc[i], 9), i))]
    dev = torch.cuda.get_device_name(0) if device != "cpu" and torch.cuda.is_available() else (
        platform.processor() or platform.machine())
    header = (f"# Test-bed benchmark (issue 3)\n\nDevice: {dev}, {torch.get_num_threads()} torch threads, torch "
              f"{torch.__version__}. Regenerate: `python experiments/benchmark_testbed.py [device=cuda]`. "
              f"top1/drop/agreement in %, kl_fp32 = mean KL(float || quantized) over the 10,000 test images, "
              f"calib_s = calibration wall time, calib_peak_mb = peak memory during calibration (GPU allocator "
              f"peak on CUDA, resident high-water mark on CPU).\n")
    parts = [header]
    for section, title in SECTIONS.items():
        part = df[df.section == section]
        if len(part):
            parts.append(f"\n## {title}\n\n" + part[COLUMNS].to_markdown(index=False) + "\n")
    Path(out + ".md").write_text("".join(parts))
    df.to_csv(out + ".csv", index=False)


if __name__ == "__main__":
    main()
