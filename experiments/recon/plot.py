"""The reconstruction grid (experiment=recon): KL(float || quantized), agreement and top-1 per model, method, bit
width and reconstruction setting, mean ± std over the calibration seeds; a table (grid.md, grid.csv) and a plot
(grid.png).

    python experiments/recon/plot.py multirun/recon [more folders] [--out experiments/recon] [--keep grid.csv]

`--keep`: the cells of an earlier table (e.g. the committed grid.csv) that the folders do not hold stay in the
table, so rows run on different machines at different times (the GPU's base_ptq / ptq4vit, the CPU's repq_vit /
adalog) form one table; the `device` column says where each cell ran (its recon seconds are that machine's). A
stressed test-bed (model/outliers=<profile>) is its own model, `fmnist_vit+severe`, as in ptq.report.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ptq.plot_style import model_label  # noqa: E402

RECONS = ("none", "brecq", "qdrop")
MEASURES = (("kl_fp32", "KL(fp32 || quantized)"), ("agreement", "agreement with fp32 (%)"))


def load(folder: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(folder.rglob("results.json")):
        r = json.loads(path.read_text())
        if r.get("status") != "ok" or r.get("quantizer") == "fp32":
            continue
        rec = r.get("reconstruction") or {}
        rows.append({"model": model_label(r, r["config"]), "method": r["quantizer"],
                     "bits": f"W{r['bits_w']}A{r['bits_a']}",
                     "recon": r["config"].get("recon", {}).get("name", "none"), "seed": r["config"]["calib"]["seed"],
                     "top1": r["top1"], "agreement": r["agreement"], "kl_fp32": r["kl_fp32"],
                     "recon_s": rec.get("seconds", 0.0), "iters": rec.get("iters", 0), "num_test": r["num_test"],
                     "device": r.get("env", {}).get("device_name", "?")})
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["model", "method", "bits", "recon", "device"])
    out = g.agg(n=("seed", "size"), top1=("top1", "mean"), top1_std=("top1", "std"), agreement=("agreement", "mean"),
                agreement_std=("agreement", "std"), kl=("kl_fp32", "mean"), kl_std=("kl_fp32", "std"),
                recon_s=("recon_s", "mean"), iters=("iters", "max"), num_test=("num_test", "max")).reset_index()
    out["order"] = out["recon"].map(RECONS.index)
    return out.sort_values(["model", "method", "bits", "order"]).drop(columns="order")


def markdown(s: pd.DataFrame) -> str:
    lines = ["| model | method | bits | recon | seeds | top-1 | agreement | KL(fp32 ‖ q) | recon s (iters/unit) "
             "| device |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in s.iterrows():
        lines.append(f"| {r.model} | {r.method} | {r.bits} | {r.recon} | {r.n} | {r.top1:.2f} ± {r.top1_std:.2f} | "
                     f"{r.agreement:.2f} ± {r.agreement_std:.2f} | {r.kl:.4f} ± {r.kl_std:.4f} | "
                     f"{r.recon_s:.0f} ({r.iters}) | {r.device} |")
    return "\n".join(lines)


def plot(s: pd.DataFrame, path: Path) -> None:
    models = sorted(s["model"].unique())
    fig, axes = plt.subplots(len(MEASURES), len(models), figsize=(5.5 * len(models), 7), squeeze=False)
    for j, model in enumerate(models):
        sm = s[s["model"] == model]
        groups = [(m, b) for m in sorted(sm["method"].unique()) for b in sorted(sm["bits"].unique())]
        for i, (key, label) in enumerate(MEASURES):
            ax = axes[i][j]
            width = 0.8 / len(RECONS)
            for k, recon in enumerate(RECONS):
                vals, errs = [], []
                for m, b in groups:
                    row = sm[(sm["method"] == m) & (sm["bits"] == b) & (sm["recon"] == recon)]
                    col = "kl" if key == "kl_fp32" else key
                    vals.append(row[col].iloc[0] if len(row) else float("nan"))
                    errs.append(row[f"{col}_std"].iloc[0] if len(row) else 0.0)
                ax.bar([x + (k - 1) * width for x in range(len(groups))], vals, width, yerr=errs, label=recon,
                       capsize=2)
            ax.set_xticks(range(len(groups)), [f"{m}\n{b}" for m, b in groups], fontsize=8)
            ax.set_ylabel(label)
            if key == "kl_fp32":
                ax.set_yscale("log")
            else:   # the differences are a few points: the axis starts just below the lowest bar, and says so
                low = max(0.0, float(sm["agreement"].min()) - 3)
                ax.set_ylim(low, 100)
                ax.set_ylabel(f"{label}\naxis starts at {low:.0f} %, not 0")
            ax.set_title(model)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="recon", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.suptitle(sample_caption(s), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend sits outside the panels, over no data


def sample_caption(s: pd.DataFrame) -> str:
    """n (seeds per bar) and N (test images per run) of the plot, for its caption."""
    ns = sorted({int(v) for v in s["n"]})
    text = "mean ± std (error bars) over n = " + "/".join(map(str, ns)) + " calibration seeds per bar"
    if "num_test" in s and s["num_test"].notna().any():
        text += ", N = " + "/".join(f"{int(v):,}" for v in sorted(s["num_test"].dropna().unique())) + " test images"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--keep", type=Path, default=None, help="an earlier grid.csv whose other cells stay")
    args = ap.parse_args()
    df = pd.concat([load(f) for f in args.folders], ignore_index=True)
    s = summarize(df)
    kept = 0
    if args.keep is not None:
        old = pd.read_csv(args.keep)
        if "device" not in old:
            old["device"] = "?"
        key = ["model", "method", "bits", "recon"]
        new_keys = set(map(tuple, s[key].values))
        old = old[[tuple(k) not in new_keys for k in old[key].values]]
        kept = len(old)
        s = pd.concat([old, s], ignore_index=True)
        s["order"] = s["recon"].map(RECONS.index)
        s = s.sort_values(["model", "method", "bits", "order"]).drop(columns="order").reset_index(drop=True)
    s.to_csv(args.out / "grid.csv", index=False)
    source = ", ".join(map(str, args.folders)) + (f" and {kept} cells kept from {args.keep}" if kept else "")
    (args.out / "grid.md").write_text(f"# Reconstruction grid (experiment=recon)\n\n{len(df)} runs from "
                                      f"{source}; mean ± std over calibration seeds.\n\n{markdown(s)}\n")
    plot(s, args.out / "grid.png")
    print(markdown(s))


if __name__ == "__main__":
    main()
