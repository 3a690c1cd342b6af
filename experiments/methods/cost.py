"""Calibration cost, agreement and KL to float, and the W4A4-moving settings of each method, from the results.json
files of a sweep (the columns `python -m ptq.report` does not show beside its top-1 table).

Cost: calibration seconds and peak memory during calibration (results.json `calib_seconds`,
`calib_peak_memory_mb`: the CUDA allocator peak, or the process's peak resident memory on CPU), mean over the runs
of a method on a model at a bit width. Settings: what each method's resolved slots (results.json `ptq_config`)
say about the choices that move W4A4 by points -- weight granularity, the patch-embedding conv's weight, the
image (patch-embedding input) and head bits (bits.first_last), the post-softmax quantizer, calibration images and
transform, the reconstruction -- so they are columns, not footnotes. Runs with and without reconstruction (and
with each reconstruction) are separate rows everywhere: `recon` is a key of every table.
Fidelity: top-1, agreement with the float model's predictions and KL(float || quantized), mean ± std over seeds
(no ± for one run). The report's own settings table (`python -m ptq.report ... --out DIR`: DIR/settings.md) has
the same settings per column of the methods table.
    python experiments/methods/cost.py [multirun/methods] [--out experiments/methods]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ptq.report import RECON_LABELS, resolved_slots, slot_text


def recon_text(config: dict) -> str:
    """`none`, or `BRECQ: 300 it, 1024 img` from the run's recon config."""
    recon = config.get("recon") or {}
    name = recon.get("name", "none")
    if name == "none":
        return "none"
    return f"{RECON_LABELS.get(name, name)}: {recon.get('iters', '?')} it, {recon.get('n_images', '?')} img"


def read_runs(sweep: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(sweep.rglob("results.json")):
        d = json.loads(path.read_text())
        pc, config = d.get("ptq_config") or {}, d.get("config") or {}
        if d.get("status") != "ok" or not pc.get("enabled", (config.get("quantizer") or {}).get("enabled")):
            continue
        slots = resolved_slots(d)  # ptq_config's, else resolved from the config (files rebuilt from a runs.csv)
        recipe = pc.get("recipe") or (config.get("quantizer") or {}).get("recipe") or []
        post_ln = slot_text(slots, "ln_input")
        if "reparam_layernorm" in recipe and slots.get("ln_input", {}).get("granularity") == "channel":
            post_ln += " -> tensor (reparam)"
        calib = config.get("calib") or {}
        first_last = pc.get("first_last", (config.get("bits") or {}).get("first_last"))
        rows.append({"model": d["model"], "method": d["quantizer"], "compat": d["compat"],
                     "bits": f"W{d['bits_w']}A{d['bits_a']}", "recon": (config.get("recon") or {}).get("name", "none"),
                     "top1": d["top1"], "agreement": d["agreement"],
                     "kl_fp32": d["kl_fp32"], "num_test": d.get("num_test"), "calib_s": d.get("calib_seconds"),
                     "peak_mb": d.get("calib_peak_memory_mb"),
                     "linear weights": slot_text(slots, "weight"), "qkv weight": slot_text(slots, "qkv_weight"),
                     "conv weight": slot_text(slots, "conv_weight"), "head weight": slot_text(slots, "head_weight"),
                     "image": slot_text(slots, "image"), "head input": slot_text(slots, "head_input"),
                     "first/last": "off" if first_last is None else f"{first_last}-bit", "post-LN inputs": post_ln,
                     "post-softmax": slot_text(slots, "softmax"),
                     "calibration": f"{calib.get('n_images', pc.get('n_images'))} img, "
                                    f"{calib.get('transform', 'eval')} transform",
                     "reconstruction": recon_text(config), "recipe": " > ".join(recipe)})
    return pd.DataFrame(rows)


def mean_std(values: pd.Series, digits: int) -> str:
    """mean ± sample std over several runs; one run: the number with a dagger (no spread measured)."""
    return f"{values.mean():.{digits}f}" + (f" ± {values.std():.{digits}f}" if len(values) > 1 else "†")


def tables(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(cost per model, method, compat, bits, recon: mean and std of seconds, mean peak MB, runs; fidelity per the
    same keys; settings per method and reconstruction at W4A4)."""
    keys = ["model", "method", "compat", "bits", "recon"]
    fidelity = runs.groupby(keys, sort=True).agg(
        top1=("top1", lambda v: mean_std(v, 2)), agreement=("agreement", lambda v: mean_std(v, 2)),
        kl_fp32=("kl_fp32", lambda v: mean_std(v, 4)), runs=("top1", "size")).reset_index()
    cost = runs.groupby(keys, sort=True).agg(
        calib_s_mean=("calib_s", "mean"), calib_s_std=("calib_s", "std"), peak_mb_mean=("peak_mb", "mean"),
        runs=("calib_s", "size")).round(1).reset_index()
    setting_cols = ["linear weights", "qkv weight", "conv weight", "head weight", "image", "head input",
                    "first/last", "post-LN inputs", "post-softmax", "calibration", "reconstruction", "recipe"]
    w4 = runs[runs["bits"] == "W4A4"]
    settings = (w4 if len(w4) else runs).drop_duplicates(["method", "recon"])[["method", "recon", *setting_cols]]
    return cost, fidelity, settings.reset_index(drop=True)


def describe_test_images(runs: pd.DataFrame) -> str:
    sizes = sorted({int(v) for v in runs["num_test"].dropna()})
    if not sizes:
        return "test images not recorded"
    return "N = " + " / ".join(f"{v:,}" for v in sizes) + " test images per run"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", nargs="?", default="multirun/methods")
    p.add_argument("--out", default=None, help="write cost.md, cost.csv and fidelity.csv there")
    args = p.parse_args(argv)
    runs = read_runs(Path(args.sweep))
    if runs.empty:
        raise SystemExit(f"no finished quantized runs under {args.sweep}")
    cost, fidelity, settings = tables(runs)
    text = ("## Top-1, agreement and KL(float || quantized) (mean ± std over calibration seeds; † one run; "
            f"{describe_test_images(runs)})\n\n"
            + fidelity.to_markdown(index=False) + "\n\n## Calibration cost (mean over calibration seeds; peak = "
            "process RSS on CPU, allocator peak on GPU)\n\n"
            + cost.to_markdown(index=False) + "\n\n## Settings per method (W4A4; resolved slots)\n\n"
            + settings.to_markdown(index=False) + "\n\n`= weight (4-bit)`: the slot is off, its operands are "
            "quantized like the parent slot's (e.g. the head's weight like every other weight, at bits.w).\n")
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cost.md").write_text(text)
        cost.to_csv(out / "cost.csv", index=False)
        fidelity.to_csv(out / "fidelity.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
