"""Block reconstruction on the test-bed (issue 13 item 5): each method with and without reconstruction on
fmnist_vit at W4A4 and W3A3, on 2 CPU threads: seconds per block, iterations, top-1, agreement and KL to float.

    PYTHONPATH=$PWD python experiments/recon/benchmark.py [--recon none brecq qdrop] [--max-test 2000]

Each (method, bits) is calibrated once, without the stages that must follow reconstruction (AdaLog's fold of the
post-GELU shift into fc2's bias: once folded, the model with its quantizers off is no longer the float model that
reconstruction takes its targets from); every setting then runs, on a copy of the calibrated model, `reconstruct`
(not for none) and those stages -- the same arithmetic as `run.py ... recon=<name>`, without recalibrating. Wall-clock
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
import sys
import time
from pathlib import Path

import torch

from ptq.cli import compose_config
from ptq.data import build_data
from ptq.evaluate import agreement, evaluate_logits, kl_to_reference, top1
from ptq.models import build_model
from ptq.quant import quant_ops, quantize_model, resolve_ptq_config
from ptq.quant.recipe import AFTER_RECONSTRUCT, run_recipe

OUT = Path(__file__).resolve().parent
COLUMNS = ["method", "bits", "recon", "iters", "calib_s", "recon_s", "s_per_block", "top1", "agreement", "kl_fp32"]


def evaluate(model, data, fp_logits: torch.Tensor, labels: torch.Tensor) -> dict:
    logits, _ = evaluate_logits(model, data.test_batches(256), "cpu", False)
    return {"top1": round(top1(logits, labels), 2), "agreement": round(agreement(logits, fp_logits), 2),
            "kl_fp32": round(kl_to_reference(logits, fp_logits), 5)}


def bench(method: str, bits: str, recons: list[str], max_test: int, overrides: list[str],
          record=lambda row: None) -> list[dict]:
    base = ["model=fmnist_vit", f"quantizer={method}", f"bits={bits}", "logger=none", f"data.max_test={max_test}",
            "recon=brecq", *overrides]  # recon=brecq only to draw the reconstruction images
    cfg = compose_config(base)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    data = build_data(cfg, model)
    fp_logits, labels = evaluate_logits(model, data.test_batches(256), "cpu", False)
    pcfg = resolve_ptq_config(cfg)
    after = [st for st in pcfg.recipe if st in AFTER_RECONSTRUCT]
    t0 = time.time()
    quantize_model(model, dataclasses.replace(pcfg, recipe=[st for st in pcfg.recipe if st not in after],
                                              recon=dataclasses.replace(pcfg.recon, name="none")),
                   data.calib_images, data.calib_labels, progress=False)
    calib_s = time.time() - t0
    rows = []
    for recon in recons:
        row = {"method": method, "bits": bits.upper(), "recon": recon, "calib_s": round(calib_s, 1),
               "loadavg_start": round(os.getloadavg()[0], 1)}
        rpcfg = dataclasses.replace(resolve_ptq_config(compose_config([*base, f"recon={recon}"])), recipe=after)
        m = copy.deepcopy(model)
        report = run_recipe(m, quant_ops(m), rpcfg, data.calib_images, data.calib_labels, torch.device("cpu"),
                            progress=True, recon_data=(data.recon_images, data.recon_labels))
        if recon == "none":
            rows.append({**row, "iters": 0, "recon_s": 0.0, "s_per_block": 0.0, **evaluate(m, data, fp_logits,
                                                                                           labels)})
            record(rows[-1])
            continue
        rec = report.reconstruction
        blocks = [u for u in rec["units"] if u["unit"].startswith("blocks.")]
        rows.append({**row, "iters": rec["iters"], "recon_s": rec["seconds"],
                     "s_per_block": round(sum(u["seconds"] for u in blocks) / max(len(blocks), 1), 1),
                     **evaluate(m, data, fp_logits, labels), "units": rec["units"]})
        rows[-1]["loadavg_end"] = round(os.getloadavg()[0], 1)
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "units"}), flush=True)
        record(rows[-1])
    return rows


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write(path_json: Path, rows: list[dict], meta: dict, argv: str) -> None:
    """Write the table: rows of earlier runs are kept, a (method, bits, recon) measured again replaces its row."""
    old = json.loads(path_json.read_text())["rows"] if path_json.is_file() else []
    key = ("method", "bits", "recon")
    new_keys = {tuple(r[k] for k in key) for r in rows}
    methods, bits, recons = ("base_ptq", "ptq4vit", "repq_vit", "adalog"), ("W4A4", "W3A3"), ("none", "brecq", "qdrop")
    order = {(m, b, r): i for i, (m, b, r) in enumerate((m, b, r) for m in methods for b in bits for r in recons)}
    merged = sorted([r for r in old if tuple(r[k] for k in key) not in new_keys] + rows,
                    key=lambda r: order.get(tuple(r[k] for k in key), len(order)))
    path_json.write_text(json.dumps({"meta": meta, "rows": merged}, indent=1) + "\n")
    md = [f"# Block reconstruction on the test-bed ViT ({meta['threads']} CPU threads)", "",
          f"`PYTHONPATH=$PWD python experiments/recon/benchmark.py {argv}` (rows accumulate over runs)", "",
          "fmnist_vit, the full test split (10000 images); calibration 32 images (calib.seed 3), reconstruction on the "
          "next 1024 train images of the same permutation; default reconstruction settings (ptq/schema.py, "
          "ReconConfig: 300 steps per unit, batch 32). calib_s: the method's calibration; recon_s: the whole "
          "`reconstruct` stage (captures, all 6 units, hardening); s_per_block: mean over the 4 transformer blocks. "
          "Wall-clock seconds; the 1-minute load average at the start (and end) of each row is in the table (load 2 = "
          "both cores busy with this row's 2 threads; a row measured while other jobs shared the cores would show "
          "more, and its times are upper bounds of an idle 2-core machine's).", "",
          table(merged, COLUMNS + ["loadavg_start", "loadavg_end", "note"]), ""]
    path_json.with_suffix(".md").write_text("\n".join(md))


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
    meta = {"threads": args.threads, "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "max_test": args.max_test, "overrides": args.override}
    path = OUT / f"{args.name}.json"
    rows: list[dict] = []

    def record(row: dict) -> None:
        rows.append(row)
        write(path, rows, meta, " ".join(sys.argv[1:]))

    for m in args.methods:
        for b in args.bits:
            bench(m, b, args.recon, args.max_test, args.override, record)
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
