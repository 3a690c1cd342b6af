"""Seconds per recipe stage of each compensation on the test-bed models, on the CPU with a fixed thread count: one row
per (model, compensation) with the method's stages and the `compensate` stage, and the parameters / MACs per image
the compensation adds. Written to experiments/compensation/bench.md (and printed).

    python experiments/compensation/bench.py [--threads 2] [--models fmnist_vit fmnist_swin] [--out ...]

Each job builds the model (committed checkpoint), draws the lab's calibration and compensation images, and runs
`quantizer=repq_vit bits=w4a4` with compensate=none|qwt|qwt_v2|erq (paper forms), every job in one process in turn,
so the timings share one load; other processes on the machine make them noisy (say the load with the table).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

COMPENSATIONS = ("none", "qwt", "qwt_v2", "erq")


def run(model: str, comp: str, threads: int) -> dict:
    from ptq.app import seed_everything
    from ptq.cli import compose_config
    from ptq.data import build_data
    from ptq.models import build_model
    from ptq.quant import quantize_model, resolve_ptq_config

    torch.set_num_threads(threads)
    cfg = compose_config([f"model={model}", "quantizer=repq_vit", "bits=w4a4", f"compensate={comp}", "logger=none",
                          "progress=false", "calib.seed=0", "data.max_test=1"])
    seed_everything(int(cfg.seed))
    m = build_model(cfg.model)
    data = build_data(cfg, m)
    comp_data = (data.comp_images, data.comp_labels) if data.comp_images is not None else None
    t0 = time.time()
    rep = quantize_model(m, resolve_ptq_config(cfg), data.calib_images, data.calib_labels, progress=False,
                         comp_data=comp_data)
    stages = {k[len("stage_"):]: round(v, 2) for k, v in rep.seconds.items() if k.startswith("stage_")}
    c = rep.compensation or {}
    return {"model": model, "compensation": comp, "images": c.get("images", 0), "stages": stages,
            "compensate s": stages.get("compensate", 0.0), "total s": round(time.time() - t0, 2),
            "params added": c.get("added_params", 0), "MACs/image added": c.get("added_macs_per_image", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["fmnist_vit", "fmnist_swin"])
    parser.add_argument("--out", default=str(Path(__file__).with_name("bench.md")))
    args = parser.parse_args()
    rows = [run(model, comp, args.threads) for model in args.models for comp in COMPENSATIONS]
    keys = ["model", "compensation", "images", "method stages s", "compensate s", "total s", "params added",
            "MACs/image added"]
    lines = [f"Threads {args.threads}, load average at the end {os.getloadavg()[0]:.1f} (other processes share the "
             "cores: seconds are noisy); RepQ-ViT paper form W4A4, calib.seed=0, paper forms of the compensations.",
             "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        method = " ".join(f"{k} {v}" for k, v in r["stages"].items() if k != "compensate")
        r = {**r, "method stages s": method}
        lines.append("| " + " | ".join(str(r[k]) for k in keys) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
