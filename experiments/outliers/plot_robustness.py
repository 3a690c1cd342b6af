"""Top-1 drop and KL(float || quantized) against outlier strength (experiment=outliers), mean ± std over the
calibration seeds, per model, method and bit width. The x axis is the measured max/median post-LayerNorm channel
range of each profile (median over the model's LayerNorms, from ranges.csv of analyze.py).

    python experiments/outliers/plot_robustness.py multirun/outliers [--out experiments/outliers]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from ptq.models.outliers import PROFILES  # noqa: E402
from ptq.plot_style import line_colours  # noqa: E402
from ptq.report import load_records, usable  # noqa: E402

MEASURES = (("drop", "top-1 drop (points)"), ("kl_fp32", "KL(fp32 || quantized)"))


def robustness_table(sweeps, ranges_csv: Path) -> pd.DataFrame:
    """One row per (model, profile, method, bits): mean / std / n over seeds of the drop and the KL, and the
    profile's measured channel-range ratio."""
    df = usable(load_records(sweeps))
    df = df[df["enabled"]].copy()
    df["base_model"] = df["model"].str.split("+").str[0]
    g = df.groupby(["base_model", "outliers", "method", "bits"])
    out = g.agg(drop_mean=("drop", "mean"), drop_std=("drop", "std"), kl_mean=("kl_fp32", "mean"),
                kl_std=("kl_fp32", "std"), n=("drop", "size"), num_test=("num_test", "max"))
    out = out.reset_index().rename(columns={"base_model": "model"})
    ranges = pd.read_csv(ranges_csv).groupby(["model", "profile"])["max_over_median"].median()
    out["range_ratio"] = [ranges.get((m, p), float("nan")) for m, p in zip(out["model"], out["outliers"])]
    out["order"] = out["outliers"].map(lambda p: PROFILES.index(p) if p in PROFILES else len(PROFILES))
    return out.sort_values(["model", "method", "bits", "order"]).drop(columns="order").reset_index(drop=True)


def plot(table: pd.DataFrame, path: Path, dpi: int = 80) -> None:
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(len(MEASURES), len(models), figsize=(5 * len(models), 3.4 * len(MEASURES)),
                             squeeze=False)
    colours = line_colours(zip(table["method"], table["bits"]))   # one colour per (method, bits) in every panel
    for j, model in enumerate(models):
        sub = table[table["model"] == model]
        for (method, bits), line in sub.groupby(["method", "bits"], sort=True):
            for i, (key, _label) in enumerate(MEASURES):
                col = "drop" if key == "drop" else "kl"
                axes[i, j].errorbar(line["range_ratio"], line[f"{col}_mean"], yerr=line[f"{col}_std"].fillna(0),
                                    marker="o", capsize=3, label=f"{method} {bits}", color=colours[(method, bits)])
        ticks = sub.drop_duplicates("outliers")
        for i, (key, label) in enumerate(MEASURES):
            ax = axes[i, j]
            ax.set_xscale("log")
            ax.set_xticks(ticks["range_ratio"], [f"{r:.1f}x\n{p}" for r, p in zip(ticks["range_ratio"],
                                                                                 ticks["outliers"])])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            if key == "drop":
                ax.set_yscale("symlog", linthresh=1.0)
                ax.set_ylim(bottom=0)
                ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            else:
                ax.set_yscale("log")
            ax.set_xlabel("max/median post-LayerNorm channel range (profile)", fontsize=8)
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(model, fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes[0, 1:]:  # every (method, bits) once, from whichever panel has it
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    order = sorted(range(len(labels)), key=lambda k: labels[k])
    fig.legend([handles[k] for k in order], [labels[k] for k in order], fontsize=7, loc="upper left",
               bbox_to_anchor=(1.0, 0.95), title="method, bits")  # outside the panels: it covers no data
    fig.suptitle(sample_caption(table), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def sample_caption(table: pd.DataFrame) -> str:
    """n (seeds per point) and N (test images per run) of the plot, for its caption."""
    ns = sorted({int(v) for v in table["n"]})
    text = "mean ± std over n = " + "/".join(map(str, ns)) + " calibration seeds per point"
    if "num_test" in table and table["num_test"].notna().any():
        text += ", N = " + "/".join(f"{int(v):,}" for v in sorted(table["num_test"].dropna().unique())) + " test images"
    return text + "; a point of one seed has no error bar"


def markdown(table: pd.DataFrame) -> str:
    rows = [{"model": r.model, "profile": r.outliers, "range ratio": f"{r.range_ratio:.1f}x", "method": r.method,
             "bits": r.bits, "drop": f"{r.drop_mean:.2f} ± {r.drop_std:.2f}", "KL": f"{r.kl_mean:.4f} ± {r.kl_std:.4f}",
             "n": r.n} for r in table.itertuples()]
    return pd.DataFrame(rows).to_markdown(index=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweeps", nargs="+")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "outliers")
    args = p.parse_args(argv)
    table = robustness_table(args.sweeps, args.out / "ranges.csv")
    plot(table, args.out / "robustness.png")
    text = ("# Robustness to post-LayerNorm outliers (experiment=outliers)\n\n"
            "Mean ± std over calibration seeds (n runs); drop = FP32 top-1 - quantized top-1 (points); KL = mean "
            "KL(fp32 || quantized) over the test images; range ratio = measured max/median post-LayerNorm channel "
            "range of the profile (median over the model's LayerNorms, ranges.md). Plot: robustness.png. "
            "Regenerate: `python experiments/outliers/plot_robustness.py multirun/outliers`.\n\n" + markdown(table)
            + "\n")
    (args.out / "robustness.md").write_text(text)
    table.to_csv(args.out / "robustness.csv", index=False)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
