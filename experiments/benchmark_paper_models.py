"""Calibration time and peak memory of the paper's models (issue 4), random weights, 32 calibration images.

    python experiments/benchmark_paper_models.py                      # CPU: ViT-S/224, ViT-B/224, ViT-B/384, Swin-T/224
    python experiments/benchmark_paper_models.py --models vit_s_224 --n 100 --rounds 3 --device cuda --out PATH

Each job (model, n) runs in a fresh subprocess: peak memory is that process's own (host RSS high-water mark, the
whole process: Python, torch, model, calibration; on CUDA also the allocator's peak GPU memory during calibration).
The method is PTQ4ViT W6A6 (hessian metric, paper mode) with the calib group's defaults (batch_size, chunk_mb,
capture_mb). The full search (n=100 candidates per scale, 3 rounds) is too slow for CPUs, so by default every model
is calibrated twice with a reduced grid (n=2 and n=6, 1 round) and the full setting is extrapolated:

    per-candidate step  B = (search(n2) - search(n1)) / (n2 - n1)   one more grid candidate in every search step
                                                                    of one round, over all layers
    full (extrapolated) = init + capture + rounds_full * (search(n1) + (n_full - n1) * B)

Capture (the forward/backward passes that record operands, outputs and gradients) runs once and does not depend on
n; the twin-softmax split search (m = 0..19) does not either, so it sits in search(n1). Peak memory is measured,
not extrapolated: it is bounded by calib.capture_mb and the chunk size, not by n. A job given the full setting
(--n 100 --rounds 3) is measured as is. Writes OUT.md and OUT.csv (default experiments/benchmark_paper_models).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = "vit_s_224,vit_b_224,vit_b_384,swin_t_224"
FULL_N, FULL_ROUNDS = 100, 3


def _rss_mb(field: str) -> float:
    """A memory field of this process's /proc status (Linux) in MiB, e.g. VmRSS (current resident size)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def worker(spec: dict) -> dict:
    """One calibration in this process; returns the measurements."""
    import resource

    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    from ptq.cli import compose_config
    from ptq.env import resolve_device
    from ptq.models import build_model
    from ptq.quant import quantize_model
    from ptq.quant.config import resolve_ptq_config

    cfg = compose_config([f"model={spec['model']}", "model.pretrained=false", "quantizer=ptq4vit", "bits=w6a6",
                          f"quantizer.search.n={spec['n']}", f"quantizer.search.rounds={spec['rounds']}",
                          f"calib.n_images={spec['images']}", *spec.get("overrides", [])])
    pcfg = resolve_ptq_config(cfg)
    device = resolve_device(spec["device"])
    torch.manual_seed(0)
    model = build_model(cfg.model, device)
    size = model.pretrained_cfg["input_size"]
    x = torch.randn(spec["images"], *size, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 1000, (spec["images"],), generator=torch.Generator().manual_seed(2))
    rss_before, load_before = _rss_mb("VmRSS"), os.getloadavg()[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.time()
    report = quantize_model(model, pcfg, x, y, device=device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - t0
    steps = [s for layer in report.layers for s in layer.steps]
    out = {**spec, "timm_name": cfg.model.name, "input": size[1], "params_m": round(sum(
        p.numel() for p in model.parameters()) / 1e6, 1), "calib_s": seconds,
        "init_s": report.seconds.get("stage_init_minmax", 0.0), "capture_s": report.seconds.get("capture", 0.0),
        "search_s": report.seconds.get("search", 0.0), "layers": len(report.layers), "steps": len(steps),
        "candidates": sum(s.n_candidates for s in steps), "capture_passes": report.passes,
        "rss_before_mb": rss_before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "metric": pcfg.metric, "grad": pcfg.grad, "batch_size": pcfg.batch_size, "capture_mb": pcfg.capture_mb,
        "chunk_mb": pcfg.chunk_mb,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_avg": round((load_before + os.getloadavg()[0]) / 2, 2)}  # other work on the machine meanwhile
    if device.type == "cuda":
        out.update(gpu_peak_mb=torch.cuda.max_memory_allocated(device) / 2**20,
                   gpu_reserved_mb=torch.cuda.max_memory_reserved(device) / 2**20,
                   gpu=torch.cuda.get_device_name(device), tf32=torch.backends.cuda.matmul.allow_tf32)
    return out


def run_job(spec: dict, timeout: float | None) -> dict:
    """`worker(spec)` in a fresh Python process (its own peak RSS); {'error': ...} on failure or timeout."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f}s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {**spec, "error": f"exit {p.returncode}: {' | '.join(tail)[-400:]}"}
    res = json.loads(lines[-1][len("RESULT "):])
    res["wall_s"] = time.time() - t0
    return res


def extrapolate(a: dict, b: dict | None, n_full: int, rounds_full: int) -> dict:
    """Per-candidate-step time and the full-setting estimate from two reduced runs (a: smaller n)."""
    if a.get("n") == n_full and a.get("rounds") == rounds_full:
        return {"per_candidate_step_s": float("nan"), "full_s": a["calib_s"], "full_kind": "measured"}
    if b is None or "error" in b or b["n"] == a["n"]:
        return {"per_candidate_step_s": float("nan"), "full_s": float("nan"), "full_kind": "-"}
    step = max(0.0, (b["search_s"] - a["search_s"]) / (b["n"] - a["n"]))
    per_round = a["search_s"] / a["rounds"] + (n_full - a["n"]) * step
    return {"per_candidate_step_s": step, "full_s": a["init_s"] + a["capture_s"] + rounds_full * per_round,
            "full_kind": "extrapolated"}


def estimate_full(runs: list[dict]) -> None:
    """Adds the full-setting figures to the runs of one model and device (failed runs are left alone).

    The estimate goes on the smallest-n run, from it and the largest-n run; a run at the full setting is its own
    measurement; the others get no estimate."""
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["n"])
    if ok:
        ok[0].update(extrapolate(ok[0], ok[-1] if len(ok) > 1 else None, FULL_N, FULL_ROUNDS))
        for r in ok[1:]:
            r.update(extrapolate(r, None, FULL_N, FULL_ROUNDS))


COLUMNS = ["model", "timm_name", "input", "params_m", "device", "images", "n", "rounds", "calib_s", "init_s",
           "capture_s", "capture_passes", "search_s", "per_candidate_step_s", "full_s", "full_kind", "rss_before_mb",
           "peak_rss_mb", "gpu_peak_mb", "gpu_reserved_mb", "threads", "load_avg", "metric", "grad", "batch_size",
           "capture_mb", "chunk_mb", "error"]


def fmt(v) -> str:
    if isinstance(v, float):
        return "-" if v != v else (f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}")
    return "-" if v is None else str(v)


def markdown(rows: list[dict], title: str, note: str) -> str:
    head = ["model", "input", "params (M)", "device", "images", "n / rounds", "calib s (measured)",
            "capture s (passes)", "search s", "per-candidate step s", "full n=100, 3 rounds: s", "RSS before calib MiB",
            "peak RSS MiB", "peak GPU MiB", "threads / load"]
    lines = [f"# {title}", "", note, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r and r["error"]:
            lines.append(f"| {r['model']} | | | {r['device']} | {r['images']} | {r['n']} / {r['rounds']} | "
                         f"{r['error']} |" + " |" * (len(head) - 7))
            continue
        full = "-" if r.get("full_kind") in (None, "-") else f"{fmt(r['full_s'])} ({r['full_kind']})"
        lines.append("| " + " | ".join([
            r["model"], str(r["input"]), fmt(r["params_m"]), r["device"], str(r["images"]),
            f"{r['n']} / {r['rounds']}", fmt(r["calib_s"]),
            fmt(r["capture_s"]) + (f" ({r['capture_passes']})" if r.get("capture_passes") else ""), fmt(r["search_s"]),
            fmt(r.get("per_candidate_step_s", float("nan"))), full, fmt(r["rss_before_mb"]), fmt(r["peak_rss_mb"]),
            fmt(r.get("gpu_peak_mb")), f"{r['threads']} / {r['load_avg']}"]) + " |")
    return "\n".join(lines) + "\n"


def write(rows: list[dict], out: Path, title: str, note: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(rows, title, note))
    with out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})


def benchmark(models: list[str], ns: list[int], rounds: int, images: int, device: str, threads: int | None,
              timeout: float | None, overrides: list[str], log=print, done=None) -> list[dict]:
    """Every model at every n (fresh process each); `done(rows)` is called after each model."""
    rows = []
    for model in models:
        runs = []
        for n in ns:
            spec = {"model": model, "n": n, "rounds": rounds, "images": images, "device": device,
                    "threads": threads, "overrides": overrides}
            res = run_job(spec, timeout)
            runs.append(res)
            log(f"{model:12s} {device:5s} n={n:<3d} rounds={rounds}: " + (res["error"] if "error" in res else
                f"calib {res['calib_s']:.1f}s (init {res['init_s']:.1f}, capture {res['capture_s']:.1f}, search "
                f"{res['search_s']:.1f}), peak RSS {res['peak_rss_mb']:.0f} MiB"
                + (f", GPU {res['gpu_peak_mb']:.0f} MiB" if "gpu_peak_mb" in res else "")))
        estimate_full(runs)
        rows.extend(runs)
        if done is not None:
            done(rows)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--models", default=DEFAULT_MODELS, help="model configs (conf/model), comma-separated")
    ap.add_argument("--n", default="2,6", help="grid sizes to measure; two values give the extrapolation")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per job")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "benchmark_paper_models"))
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job (e.g. calib.capture_mb=2048)")
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker)), default=str), flush=True)
        return
    ns = [int(v) for v in args.n.split(",")]
    import torch

    from ptq.quant.config import GRAD_BY_COMPAT

    cpu = platform.processor() or platform.machine()
    note = (f"Random weights, PTQ4ViT W6A6 (paper mode: hessian metric, {GRAD_BY_COMPAT['paper']} gradient), "
            f"{args.images} "
            f"calibration images, calib defaults; {os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}. "
            f"Generated by `python "
            f"experiments/benchmark_paper_models.py --models {args.models} --n {args.n} --rounds {args.rounds} "
            f"--device {args.device}" + (f" {' '.join(args.overrides)}" if args.overrides else "") + "`. "
            "Full-setting times marked *extrapolated* are estimates from the two reduced runs (see the script's "
            "docstring), not measurements; peak RSS is measured (whole process, fresh per job).")
    title, out = "Paper models: calibration time and peak memory", Path(args.out)
    rows = benchmark(args.models.split(","), ns, args.rounds, args.images, args.device, args.threads, args.timeout,
                     args.overrides, log=lambda s: print(s, flush=True), done=lambda r: write(r, out, title, note))
    print(markdown(rows, title, note))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
