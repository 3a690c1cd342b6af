"""ViT-S/224 W4A4 (random weights) block reconstruction on a GPU (issue 13 item 5): seconds per block at the
default setting's batch, extrapolated to the full setting (20000 steps per unit, AdaLog / BRECQ), and peak memory.

    python experiments/recon/vit_s_gpu.py --iters 100 --out DIR

PTQ4ViT W4A4 with a reduced search (n=20, one round) on 32 random images, then `recon=brecq` with `--iters` steps
on 1024 random images (the captured block inputs of 1024 images are what the full setting holds in memory).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ptq.cli import compose_config
from ptq.models import build_model
from ptq.quant import quantize_model, resolve_ptq_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    dev = torch.device("cuda")
    cfg = compose_config(["model=vit_s_224", "model.pretrained=false", "quantizer=ptq4vit", "bits=w4a4",
                          "quantizer.search.n=20", "quantizer.search.rounds=1", "recon=brecq",
                          f"recon.iters={args.iters}", "logger=none"])
    torch.manual_seed(0)
    model = build_model(cfg.model, dev)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 224, 224, generator=g)
    rx = torch.randn(args.images, 3, 224, 224, generator=g)
    y = torch.zeros(args.images, dtype=torch.long)
    torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.time()
    report = quantize_model(model, resolve_ptq_config(cfg), x, y[:32], device=dev, progress=False,
                            recon_data=(rx, y))
    total = time.time() - t0
    rec = report.reconstruction
    blocks = [u for u in rec["units"] if u["unit"].startswith("blocks.")]
    s_block = sum(u["seconds"] for u in blocks) / len(blocks)
    per_it = s_block / args.iters
    out = {"device": torch.cuda.get_device_name(dev), "iters": args.iters, "images": args.images,
           "seconds_total": round(total, 1), "recon_seconds": rec["seconds"], "seconds_per_block": round(s_block, 2),
           "seconds_per_iteration": round(per_it, 5),
           "full_setting_estimate_s": round(per_it * 20000 * len(rec["units"]), 0),
           "peak_memory_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1), "units": rec["units"]}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "vit_s_gpu.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "units"}))


if __name__ == "__main__":
    main()
