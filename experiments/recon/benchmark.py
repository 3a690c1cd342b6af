"""Block reconstruction on the test-bed (issue 13 item 5): each method with and without reconstruction on
fmnist_vit at W4A4 and W3A3, on 2 CPU threads: seconds per block, iterations, top-1, agreement and KL to float.

    PYTHONPATH=$PWD python experiments/recon/benchmark.py [--recon none brecq qdrop] [--max-test 2000]

Each (method, bits) is calibrated once; every reconstruction setting then runs the `reconstruct` stage on a copy
of the calibrated model (the same arithmetic as `run.py ... recon=<name>`, without recalibrating). Wall-clock
seconds on this machine, whose 2 cores may be shared with other jobs: the load average is recorded with the table.
Writes experiments/recon/benchmark.{md,json}.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from ptq.cli import compose_config
from ptq.data import build_data
from ptq.evaluate import agreement, evaluate_logits, kl_to_reference, top1
from ptq.models import build_model
from ptq.quant import quant_ops, quantize_model, resolve_ptq_config
from ptq.quant.recipe import run_recipe

OUT = Path(__file__).resolve().parent
COLUMNS = ["method", "bits", "recon", "iters", "calib_s", "recon_s", "s_per_block", "top1", "agreement", "kl_fp32"]


def evaluate(model, data, fp_logits: torch.Tensor, labels: torch.Tensor) -> dict:
    logits, _ = evaluate_logits(model, data.test_batches(256), "cpu", False)
    return {"top1": round(top1(logits, labels), 2), "agreement": round(agreement(logits, fp_logits), 2),
            "kl_fp32": round(kl_to_reference(logits, fp_logits), 5)}


def bench(method: str, bits: str, recons: list[str], max_test: int, overrides: list[str]) -> list[dict]:
    base = ["model=fmnist_vit", f"quantizer={method}", f"bits={bits}", "logger=none", f"data.max_test={max_test}",
            "recon=brecq", *overrides]  # recon=brecq only to draw the reconstruction images
    cfg = compose_config(base)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    data = build_data(cfg, model)
    fp_logits, labels = evaluate_logits(model, data.test_batches(256), "cpu", False)
    pcfg = resolve_ptq_config(cfg)
    t0 = time.time()
    quantize_model(model, dataclasses.replace(pcfg, recon=dataclasses.replace(pcfg.recon, name="none")),
                   data.calib_images, data.calib_labels, progress=False)
    calib_s = time.time() - t0
    rows = []
    for recon in recons:
        row = {"method": method, "bits": bits.upper(), "recon": recon, "calib_s": round(calib_s, 1)}
        if recon == "none":
            rows.append({**row, "iters": 0, "recon_s": 0.0, "s_per_block": 0.0, **evaluate(model, data, fp_logits,
                                                                                           labels)})
            continue
        rpcfg = dataclasses.replace(resolve_ptq_config(compose_config([*base, f"recon={recon}"])), recipe=[])
        m = copy.deepcopy(model)
        report = run_recipe(m, quant_ops(m), rpcfg, data.calib_images, data.calib_labels, torch.device("cpu"),
                            progress=True, recon_data=(data.recon_images, data.recon_labels))
        rec = report.reconstruction
        blocks = [u for u in rec["units"] if u["unit"].startswith("blocks.")]
        rows.append({**row, "iters": rec["iters"], "recon_s": rec["seconds"],
                     "s_per_block": round(sum(u["seconds"] for u in blocks) / max(len(blocks), 1), 1),
                     **evaluate(m, data, fp_logits, labels), "units": rec["units"]})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "units"}), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["base_ptq", "ptq4vit"])
    ap.add_argument("--bits", nargs="+", default=["w4a4", "w3a3"])
    ap.add_argument("--recon", nargs="+", default=["none", "brecq", "qdrop"])
    ap.add_argument("--max-test", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--override", nargs="*", default=[], help="extra config overrides, e.g. recon.iters=100")
    ap.add_argument("--name", default="benchmark")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    t0 = time.time()
    rows = [r for m in args.methods for b in args.bits for r in bench(m, b, args.recon, args.max_test, args.override)]
    load_end = os.getloadavg()
    meta = {"threads": args.threads, "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "loadavg_start": load_start, "loadavg_end": load_end,
            "max_test": args.max_test, "overrides": args.override, "total_s": round(time.time() - t0, 1)}
    (OUT / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    md = [f"# Block reconstruction on the test-bed ViT ({args.threads} CPU threads)", "",
          f"`PYTHONPATH=$PWD python experiments/recon/benchmark.py {' '.join(os.sys.argv[1:])}`", "",
          f"fmnist_vit, {args.max_test} test images; calibration 32 images (calib.seed 3), reconstruction on the next "
          f"1024 train images of the same permutation; default reconstruction settings (ptq/schema.py ReconConfig)"
          f"{' with ' + ' '.join(args.override) if args.override else ''}. calib_s: the method's calibration; "
          f"recon_s: the whole `reconstruct` stage (captures, all units, hardening); s_per_block: mean over the "
          f"4 transformer blocks. Wall-clock on a machine whose {os.cpu_count()} cores are shared with other "
          f"engineers' jobs: load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end, so the "
          f"times are upper bounds of an idle 2-core machine's.", "", table(rows), ""]
    (OUT / f"{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
