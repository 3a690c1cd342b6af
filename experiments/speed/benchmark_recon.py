"""Reconstruction speed, the code before issue 23 against the current one, side by side on the same CPU (issue 23).

    PYTHONPATH=$PWD python experiments/speed/benchmark_recon.py [--old-rev 546eb90] [--rounds 2] [--iters 60]
        [--stage] [--methods ptq4vit] [--threads 2]

The old code is `git archive <old-rev> ptq conf` in a temporary folder, put first on PYTHONPATH of its worker
processes; each measurement is one worker process, old and new interleaved (old, new, old, new, ...) so that the
load of the shared machine falls on both alike. Workers:
- `unit`: fmnist_vit W4A4 calibrated with the method, then `reconstruct_unit` on blocks.1 with the BRECQ defaults
  (batch 32, quantized inputs, regularizer after 20 % warm-up) for --iters steps: milliseconds per iteration
  (the whole loop, eval_images 32), and a hash of the unit's hardened rounding and learned steps;
- `--stage`: the whole `reconstruct` stage at the defaults (6 units x 300 steps, 1024 images) after the method's
  calibration, its seconds, top-1 / agreement / KL to float on the first --max-test test images, and a hash of
  every quantizer's saved parameters; plus the method's calibration seconds (its searches: the same code in both).
Equal hashes = bit-identical results. Writes experiments/speed/benchmark_recon.{json,md} (rows accumulate).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent
ROOT = OUT.parents[1]


def params_hash(model) -> str:
    from ptq.quant.params import quant_state

    tensors, _ = quant_state(model)
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].numpy().tobytes())
    return h.hexdigest()[:16]


def worker(mode: str, method: str, iters: int, max_test: int) -> dict:
    import torch

    from ptq.cli import compose_config
    from ptq.data import build_data
    from ptq.evaluate import agreement, evaluate_logits, kl_to_reference, top1
    from ptq.models import build_model
    from ptq.quant import quantize_model, resolve_ptq_config
    from ptq.quant.wrap import set_quant_enabled
    from ptq.recon.stage import capture_unit, reconstruct_unit
    from ptq.recon.units import find_units

    cfg = compose_config(["model=fmnist_vit", f"quantizer={method}", "bits=w4a4", "logger=none",
                          f"data.max_test={max_test}", "recon=brecq"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    data = build_data(cfg, model)
    pcfg = resolve_ptq_config(cfg)
    if mode == "stage":
        fp_logits, labels = evaluate_logits(model, data.test_batches(256), "cpu", False)
        t0 = time.perf_counter()
        report = quantize_model(model, pcfg, data.calib_images, data.calib_labels, progress=False,
                                recon_data=(data.recon_images, data.recon_labels))
        total = time.perf_counter() - t0
        rec = report.reconstruction
        logits, _ = evaluate_logits(model, data.test_batches(256), "cpu", False)
        blocks = [u for u in rec["units"] if u["unit"].startswith("blocks.")]
        return {"calib_s": round(total - rec["seconds"], 2), "recon_s": rec["seconds"],
                "s_per_block": round(sum(u["seconds"] for u in blocks) / len(blocks), 2),
                "top1": round(top1(logits, labels), 2), "agreement": round(agreement(logits, fp_logits), 2),
                "kl_fp32": round(kl_to_reference(logits, fp_logits), 5), "hash": params_hash(model)}
    quantize_model(model, dataclasses.replace(pcfg, recon=dataclasses.replace(pcfg.recon, name="none")),
                   data.calib_images, data.calib_labels, progress=False)
    x = data.recon_images
    set_quant_enabled(model, False)
    unit = dict(find_units(model, "block", x[:1]))["blocks.1"]
    fp_in, target, _ = capture_unit(model, unit, x, 64)
    set_quant_enabled(model, True)
    q_in, _, _ = capture_unit(model, unit, x, 64)
    rc = dataclasses.replace(pcfg.recon, iters=iters, eval_images=32)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    row = reconstruct_unit("blocks.1", unit, rc, fp_in, q_in, target, None, False, g, False)
    dt = time.perf_counter() - t0
    return {"ms_per_iter": round(1e3 * dt / iters, 2), "mse_after": row["mse_after"], "hash": params_hash(model)}


def run_worker(path: str, mode: str, method: str, iters: int, threads: int, max_test: int) -> dict:
    env = {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(threads)}
    load0 = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--worker", mode, "--methods", method, "--iters", str(iters),
           "--threads", str(threads), "--max-test", str(max_test)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return {**res, "load": f"{load0:.1f}/{os.getloadavg()[0]:.1f}"}


def table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows])


def write(rows: list[dict], argv: str) -> str:
    path = OUT / "benchmark_recon.json"
    old = json.loads(path.read_text()) if path.is_file() else []
    keep = [r for r in old if (r["mode"], r["method"]) not in {(x["mode"], x["method"]) for x in rows}]
    allrows = keep + rows
    path.write_text(json.dumps(allrows, indent=1) + "\n")
    unit = [r for r in allrows if r["mode"] == "unit"]
    stage = [r for r in allrows if r["mode"] == "stage"]
    md = ["# Reconstruction speed: before issue 23 (546eb90) and now, side by side", "",
          f"`PYTHONPATH=$PWD python experiments/speed/benchmark_recon.py {argv}` (rows accumulate over runs)", "",
          "fmnist_vit W4A4, 2 CPU threads, old and new worker processes interleaved (round = one old and one new "
          "run, back to back). `hash`: the hardened rounding, learned steps and every other saved quantizer "
          "parameter; equal = bit-identical. `load`: 1-minute load average before / after the worker (other jobs "
          "share the 2 cores).", ""]
    if unit:
        md += ["## One block (blocks.1), the reconstruction loop, BRECQ defaults", "",
               table(unit, ["method", "round", "code", "iters", "ms_per_iter", "speedup", "mse_after", "hash",
                            "load"]), ""]
    if stage:
        md += ["## The whole reconstruct stage (6 units x 300 steps) after calibration", "",
               table(stage, ["method", "round", "code", "calib_s", "recon_s", "s_per_block", "speedup", "top1",
                             "agreement", "kl_fp32", "hash", "load"]), ""]
    text = "\n".join(md)
    path.with_suffix(".md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-rev", default="546eb90")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--stage", action="store_true", help="the whole reconstruct stage instead of one block")
    ap.add_argument("--methods", nargs="+", default=["ptq4vit"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-test", type=int, default=2000)
    ap.add_argument("--worker", choices=["unit", "stage"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(worker(args.worker, args.methods[0], args.iters, args.max_test)))
        return
    mode = "stage" if args.stage else "unit"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.old_rev, "ptq", "conf"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        for method in args.methods:
            for r in range(1, args.rounds + 1):
                pair = {}
                for code, path in ((args.old_rev, tmp), ("current", str(ROOT))):
                    res = run_worker(path, mode, method, args.iters, args.threads, args.max_test)
                    pair[code] = res
                    rows.append({"mode": mode, "method": method, "round": r, "code": code,
                                 "iters": args.iters if mode == "unit" else 300, **res})
                    print(json.dumps(rows[-1]), flush=True)
                key = "ms_per_iter" if mode == "unit" else "s_per_block"
                rows[-1]["speedup"] = round(pair[args.old_rev][key] / pair["current"][key], 2)
                write(rows, " ".join(sys.argv[1:]))
    print(write(rows, " ".join(sys.argv[1:])))


if __name__ == "__main__":
    main()
