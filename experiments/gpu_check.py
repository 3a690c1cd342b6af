"""GPU check of issue 4: PTQ4ViT W6A6 calibration of random-weight ViT-S/224 and ViT-B/384 with 32 images on CUDA at
the full search setting (n=100, 3 rounds): seconds and peak GPU memory; and ViT-S/224 on this machine's CPU cores for
the ratio. Run by experiments/gpu_check.sh (which sets up the packages); stays inside --budget seconds.

Order: for CUDA ViT-S/224, then CUDA ViT-B/384: n=2 and n=6 (1 round) for an estimate of the full setting, then
the full setting itself when the estimate fits the remaining budget; last CPU ViT-S/224 at n=2 and n=6
(extrapolated), then full when the estimate is under --cpu-full-max seconds and fits. Every job runs in a fresh
process (benchmark_paper_models.run_job). Writes gpu_check.md / .csv / .json into --out (default: $OUT, else
experiments/).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import benchmark_paper_models as bench  # beside this script: its folder is first on the import path

HERE = Path(__file__).resolve().parent

FULL = (bench.FULL_N, bench.FULL_ROUNDS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=360.0, help="seconds for all jobs together")
    ap.add_argument("--cpu-full-max", type=float, default=180.0, help="run the CPU job at the full setting only "
                    "when its estimate is below this many seconds")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--out", default=os.environ.get("OUT") or str(HERE))
    args = ap.parse_args()
    t_start = time.time()
    left = lambda: args.budget - (time.time() - t_start)  # noqa: E731
    rows: list[dict] = []
    log = lambda s: print(f"[{time.time() - t_start:5.0f}s] {s}", flush=True)  # noqa: E731

    def job(model: str, device: str, n: int, rounds: int, threads: int | None = None, cap: float = 1e9) -> dict:
        timeout = max(10.0, min(cap, left() - 5))
        spec = {"model": model, "n": n, "rounds": rounds, "images": args.images, "device": device,
                "threads": threads, "overrides": []}
        r = bench.run_job(spec, timeout)
        log(f"{model} {device} n={n} rounds={rounds}: " + (r["error"] if "error" in r else
            f"calib {r['calib_s']:.1f}s (capture {r['capture_s']:.1f}, search {r['search_s']:.1f}), "
            f"GPU peak {r.get('gpu_peak_mb', float('nan')):.0f} MiB, RSS peak {r['peak_rss_mb']:.0f} MiB, "
            f"wall {r.get('wall_s', float('nan')):.0f}s"))
        rows.append(r)
        return r

    def pair(model: str, device: str, threads: int | None = None) -> float:
        """n=2 and n=6, 1 round; returns the extrapolated full-setting seconds (nan on failure)."""
        a = job(model, device, 2, 1, threads, cap=left() / 2)
        b = job(model, device, 6, 1, threads, cap=left() / 2) if "error" not in a else {"error": "skipped"}
        bench.estimate_full([a, b])
        return a.get("full_s", float("nan"))

    import torch

    log(f"torch {torch.__version__}, CUDA {torch.cuda.is_available()}, "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}, {os.cpu_count()} CPU cores")
    cpu_reserve = 100.0  # kept for the CPU ratio job
    if torch.cuda.is_available():
        for model, reserve in (("vit_s_224", cpu_reserve + 60), ("vit_b_384", cpu_reserve)):
            est = pair(model, "cuda")
            if est == est and est * 1.25 + 20 < left() - reserve:
                bench.estimate_full([job(model, "cuda", *FULL, cap=left() - reserve)])
            else:
                log(f"{model} cuda: full setting not run (estimate {est:.0f}s, {left():.0f}s left)")
    else:
        log("no CUDA device: only the CPU job runs")
    threads = os.cpu_count()
    est = pair("vit_s_224", "cpu", threads)
    if est == est and est < args.cpu_full_max and est * 1.25 + 20 < left():
        bench.estimate_full([job("vit_s_224", "cpu", *FULL, threads, cap=left())])
    else:
        log(f"CPU full setting not run: estimate {est:.0f}s (limit {args.cpu_full_max:.0f}s), {left():.0f}s left")

    def full_of(model: str, device: str) -> tuple[float, str]:
        cands = [r for r in rows if r["model"] == model and r["device"] == device and "error" not in r
                 and r.get("full_kind") in ("measured", "extrapolated")]
        cands.sort(key=lambda r: r["full_kind"] != "measured")  # a measurement wins over an estimate
        return (cands[0]["full_s"], cands[0]["full_kind"]) if cands else (float("nan"), "-")

    gpu_s, gpu_kind = full_of("vit_s_224", "cuda")
    cpu_s, cpu_kind = full_of("vit_s_224", "cpu")
    gpu_name = next((r["gpu"] for r in rows if r.get("gpu")), "no GPU")
    same = []  # CPU / GPU at the same reduced settings, both measured
    for n in (2, 6):
        g = [r for r in rows if (r["model"], r["device"], r["n"]) == ("vit_s_224", "cuda", n) and "error" not in r]
        c = [r for r in rows if (r["model"], r["device"], r["n"]) == ("vit_s_224", "cpu", n) and "error" not in r]
        if g and c:
            same.append(f"n={n}, 1 round: {c[0]['calib_s']:.1f} s / {g[0]['calib_s']:.1f} s = "
                        f"{c[0]['calib_s'] / g[0]['calib_s']:.1f}x")
    ratio = (f"CPU / GPU calibration time, ViT-S/224 at n=100, 3 rounds: {cpu_s:.0f} s ({cpu_kind}, {threads} "
             f"threads) / {gpu_s:.1f} s ({gpu_kind}) = **{cpu_s / gpu_s:.1f}x**" if gpu_s == gpu_s and cpu_s == cpu_s
             else "CPU / GPU ratio: not available (a job failed or was skipped; see the table)")
    if same:
        ratio += "; measured at the same reduced settings: " + "; ".join(same)
    note = (f"{gpu_name}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch "
            f"{torch.__version__}. Random weights, PTQ4ViT W6A6 (hessian metric, paper mode), {args.images} "
            f"calibration images, calib defaults, TF32 off. Generated by `bash experiments/gpu_check.sh` "
            f"({time.time() - t_start:.0f} s). Rows at n / rounds = 100 / 3 are measured; the full-setting column "
            f"of the reduced rows (n=2 and 6, 1 round) is an extrapolation (experiments/benchmark_paper_models.py)."
            f"\n\n{ratio}")
    out = Path(args.out) / "gpu_check"
    bench.write(rows, out, f"GPU check: PTQ4ViT W6A6 calibration, {args.images} images", note)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(out.with_suffix(".md").read_text())
    log(f"wrote {out}.md/.csv/.json")


if __name__ == "__main__":
    main()
