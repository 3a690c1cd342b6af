"""Calibration and reconstruction at the paper models' size on one device (issue 23 item 3): ViT-S/224 and ViT-B/384
with random weights, PTQ4ViT W6A6 (full search: n=100, 3 rounds), RepQ-ViT W4A4, AdaLog W4A4 calibration, and
BRECQ W4A4 reconstruction after a reduced PTQ4ViT search, with peak memory.

    python experiments/speed/device_benchmark.py --device cuda [--budget 540] [--recon-iters 200] [--out DIR]
    python experiments/speed/device_benchmark.py --tiny          # the CPU check: fmnist_vit, small settings

Each job runs in a fresh process (peak memory per job). Calibration: 32 random images, the method's defaults
(PTQ4ViT W6A6 at n=100, 3 rounds: the "full setting" of experiments/gpu_full_settings.md). Reconstruction: the full
setting is 20000 steps per unit (BRECQ / AdaLog's papers) on 1024 images; it runs --recon-iters steps per unit
and the table extrapolates: full seconds = seconds per step (mean over the transformer blocks) x 20000 x units --
the row says `measured` or `extrapolated`. Jobs that would not fit in what is left of --budget are skipped and
listed. Writes device_benchmark.{md,json} into --out (default: $OUT, else experiments/speed/).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FULL_ITERS = 20000


def jobs(tiny: bool, recon_iters: int) -> list[dict]:
    """(model, method, bits, overrides, recon iters) of every row, in order of cost."""
    if tiny:
        models, ptq4vit_full = ["fmnist_vit"], ["quantizer.search.n=4", "quantizer.search.rounds=1"]
        iters, images = min(recon_iters, 4), 32
    else:
        models, ptq4vit_full, iters, images = ["vit_s_224", "vit_b_384"], [], recon_iters, 1024
    rows = []
    for m in models:
        rows += [{"model": m, "method": "ptq4vit", "bits": "w6a6", "overrides": ptq4vit_full, "recon_iters": 0},
                 {"model": m, "method": "repq_vit", "bits": "w4a4", "overrides": [], "recon_iters": 0},
                 {"model": m, "method": "adalog", "bits": "w4a4",
                  "overrides": ["quantizer.search.n=4"] if tiny else [], "recon_iters": 0},
                 {"model": m, "method": "ptq4vit", "bits": "w4a4", "recon_iters": iters, "recon_images": images,
                  "overrides": ["quantizer.search.n=20", "quantizer.search.rounds=1", "recon=brecq",
                                f"recon.iters={iters}", f"recon.n_images={images}"]}]
        rows.append({**rows[-1], "compiled": True,     # the fast step form (README, "Speed"): after the eager row
                     "overrides": rows[-1]["overrides"] + ["recon.compile=true", "recon.precision=bfloat16"]})
    return rows


def run_one(spec: dict, device: str) -> dict:
    """One job in this process: calibrate (and reconstruct) on random images; seconds and peak memory."""
    import torch

    from ptq.cli import compose_config
    from ptq.models import build_model
    from ptq.quant import quantize_model, resolve_ptq_config

    dev = torch.device(device)
    weights = ["model.checkpoint=null"] if spec["model"].startswith("fmnist") else ["model.pretrained=false"]
    cfg = compose_config([f"model={spec['model']}", *weights, f"quantizer={spec['method']}", f"bits={spec['bits']}",
                          "logger=none", *spec["overrides"]])
    torch.manual_seed(0)
    model = build_model(cfg.model, dev)
    pe = model.patch_embed
    size = pe.img_size if isinstance(pe.img_size, (tuple, list)) else (pe.img_size, pe.img_size)
    shape = (pe.proj.in_channels, *size)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, *shape, generator=g)
    n_rec = spec.get("recon_images", 0)
    recon = (torch.randn(n_rec, *shape, generator=g), torch.zeros(n_rec, dtype=torch.long)) if n_rec else None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    report = quantize_model(model, resolve_ptq_config(cfg), x, torch.zeros(32, dtype=torch.long), device=dev,
                            progress=False, recon_data=recon)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    total = time.perf_counter() - t0
    out = {"device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "total_s": round(total, 2),
           "peak_gpu_mib": round(torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else None,
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    rec = report.reconstruction
    if rec:
        blocks = [u for u in rec["units"] if u["unit"].startswith(("blocks.", "layers."))] or rec["units"]
        if spec.get("compiled") and len(blocks) > 1:
            blocks = blocks[1:]     # the first block's seconds hold the compile; the others reuse its graphs
        per_step = sum(u["seconds"] for u in blocks) / len(blocks) / max(spec["recon_iters"], 1)
        full = per_step * FULL_ITERS * len(rec["units"])
        out.update(calib_s=round(total - rec["seconds"], 2), recon_s=rec["seconds"], units=len(rec["units"]),
                   s_per_step=round(per_step, 5), full_recon_s=round(full, 1),
                   full_recon="measured" if spec["recon_iters"] >= FULL_ITERS else "extrapolated")
    else:
        out.update(calib_s=round(total, 2))
    return out


def run_job(spec: dict, device: str, timeout: float, threads: int | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "WANDB_MODE": "disabled"}
    cmd = [sys.executable, __file__, "--job", json.dumps(spec), "--device", device]
    if threads:
        cmd += ["--threads", str(threads)]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f}s"}
    if p.returncode != 0:
        return {**spec, "error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return {**spec, **json.loads(p.stdout.strip().splitlines()[-1]), "wall_s": round(time.time() - t0, 1)}


COLUMNS = ["model", "method", "bits", "setting", "device_name", "calib_s", "recon_iters", "s_per_step", "units",
           "full_recon_s", "full_recon", "peak_gpu_mib", "peak_rss_mib", "wall_s", "error"]


def write(rows: list[dict], out: Path, meta: dict) -> str:
    for r in rows:
        r["setting"] = " ".join(r.get("overrides", [])) or "defaults"
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    md = ["# Calibration and reconstruction on one device (issue 23)", "",
          f"`python experiments/speed/device_benchmark.py {meta['argv']}`; {meta['host']}, torch {meta['torch']}", "",
          "Random weights, 32 random calibration images. `full_recon_s`: seconds of the full reconstruction setting "
          f"({FULL_ITERS} steps x units, BRECQ W4A4 after a reduced PTQ4ViT search), `extrapolated` from "
          "`recon_iters` steps per unit (seconds per step: mean over the transformer blocks; with recon.compile=true "
          "over all but the first, whose seconds hold the compile) or `measured`. "
          "Peak GPU memory: torch's max allocated; peak RSS: the job's process.", "", *lines, ""]
    if meta.get("skipped"):
        md += ["Skipped (would not fit the budget): " + "; ".join(meta["skipped"]), ""]
    text = "\n".join(md)
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_benchmark.md").write_text(text)
    (out / "device_benchmark.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="fmnist_vit with small settings (the CPU check)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for all jobs together (default: 540 on a device, 1800 with --tiny)")
    ap.add_argument("--recon-iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=os.environ.get("OUT") or str(HERE))
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(run_one(json.loads(args.job), args.device)))
        return
    import platform

    import torch

    device = "cpu" if args.tiny else args.device
    args.budget = args.budget or (1800.0 if args.tiny else 540.0)
    t_start = time.time()
    rows, skipped, last = [], [], {}
    for spec in jobs(args.tiny, args.recon_iters):
        left = args.budget - (time.time() - t_start)
        key = (spec["method"], spec["bits"], spec["recon_iters"] > 0)
        guess = 4 * last.get(key, 0.0)       # ViT-B/384 costs a few times ViT-S/224
        if left < 15 or guess > left:
            skipped.append(f"{spec['model']} {spec['method']} {spec['bits']} (left {left:.0f}s, guess {guess:.0f}s)")
            continue
        r = run_job(spec, device, left - 5, args.threads)
        last[key] = r.get("wall_s", 0.0)
        rows.append(r)
        print(json.dumps(r), flush=True)
    meta = {"argv": " ".join(sys.argv[1:]), "host": f"{os.cpu_count()} CPU cores ({platform.machine()})",
            "torch": torch.__version__, "skipped": skipped}
    print(write(rows, Path(args.out), meta))


if __name__ == "__main__":
    main()
