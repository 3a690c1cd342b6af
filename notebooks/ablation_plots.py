# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Ablation plots from sweep folders
#
# Reads every `results.json` under the sweep folders (through `ptq.report`, so the numbers are the tables'
# numbers) and saves, as PNG under `OUT_DIR`:
#
# - `accuracy_vs_bits_<sweep>.png`: top-1 against the bit width, one line per quantizer (and per setting the
#   sweep varies), FP32 dashed, one panel per model;
# - `metric_comparison.png`: top-1 per layer metric (the Hessian split by gradient source), bars per bit width;
# - `ablation_switches.png`: top-1 per HG / ST / GT row of the ablation, bars per bit width.
#
# Run it as a notebook (jupytext/nbmake) or as a script: `python notebooks/ablation_plots.py`.

# %% tags=["parameters"]
SWEEP_DIRS = ["multirun/table1", "multirun/ablation", "multirun/metrics", "multirun/calib_size",
              "multirun/compat", "multirun/seeds", "multirun/methods",
              "multirun/components"]  # relative to the repository root; missing ones are skipped
OUT_DIR = "experiments/plots"
ROOT = None  # repository root; None: the one holding the ptq package (installed with pip install -e .)

# %%
from pathlib import Path

import matplotlib.pyplot as plt

import ptq
from ptq import plot_style, report

root = Path(ROOT) if ROOT else Path(ptq.__file__).resolve().parents[1]


def resolve(p) -> Path:
    p = Path(p)
    return p if p.is_absolute() else root / p


sweeps = [resolve(p) for p in SWEEP_DIRS if resolve(p).is_dir()]
out_dir = resolve(OUT_DIR)
out_dir.mkdir(parents=True, exist_ok=True)
records = {p.name: report.load_records([p]) for p in sweeps}
print({name: len(df) for name, df in records.items()})
saved = []


def bits_number(label: str) -> int:
    return int(label[1:].split("A")[0])


# %% [markdown]
# ## Accuracy against bit width, per quantizer

# %%
for name, df in records.items():
    cells = report.main_table(df).cells
    if not len(cells):
        continue
    models = report.model_order(cells["model"])
    quantized = cells[cells["method"] != "FP32"]
    colour = plot_style.line_colours(quantized["method"] + " " + quantized["setting"])   # the same in every panel
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = cells[cells["model"] == model]
        fp = mine[mine["method"] == "FP32"]
        q = mine[mine["method"] != "FP32"]
        for label, line in q.groupby(q["method"] + " " + q["setting"], sort=True):
            line = line.assign(b=line["bits"].map(bits_number)).sort_values("b")
            ax.errorbar(line["b"], line["mean"], yerr=line["std"].where(line["n"] > 1), marker="o", capsize=3,
                        label=label.strip(), color=colour[label])
        if len(fp):
            ax.axhline(fp["mean"].iloc[0], color="k", ls="--", lw=1, label="FP32")
        ax.set_title(model)
        ax.set_xlabel("bits (W = A)")
        ax.set_ylabel("top-1 (%)")
        ax.set_xticks(sorted({bits_number(b) for b in q["bits"]}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: top-1 against bit width")
    saved.append(plot_style.save_figure(fig, out_dir / f"accuracy_vs_bits_{name}.png"))


# %% [markdown]
# ## Metric comparison and ablation switches (bars per bit width)

# %%
def bars(table, row_label, title, filename):
    """Grouped bars from 0 (an untruncated axis): one group per row of the table, one bar per (model, bits)
    column; error bars = the cell's 95 % interval (cells.csv ci95: Student's t over the n runs, or Wilson's
    binomial interval on the N test images for a single run); n and N in the title."""
    cells = table.cells
    columns = [c for c in table.display.columns if c in set(cells["column"])]
    labels = list(dict.fromkeys(cells["row"]))
    width = 0.8 / max(1, len(columns))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) * max(1, len(columns)) / 2 + 3), 3.8))
    for i, col in enumerate(columns):
        c = cells[cells["column"] == col].set_index("row").reindex(labels)
        xs = [j + (i - (len(columns) - 1) / 2) * width for j in range(len(labels))]
        yerr = [(c["mean"] - c["ci95_low"]).fillna(0), (c["ci95_high"] - c["mean"]).fillna(0)]
        ax.bar(xs, c["mean"], width, yerr=yerr, capsize=2, label=col)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel(row_label)
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the bars
    ns = sorted({int(n) for n in cells["n"] if n > 0})
    sizes = sorted({int(v) for v in cells["num_test"].dropna()})
    ax.set_title(f"{title}: n = {'/'.join(map(str, ns))} runs per bar"
                 + (f", N = {'/'.join(f'{v:,}' for v in sizes)} test images" if sizes else "")
                 + "; error bars: 95 % interval", fontsize=9)
    saved.append(plot_style.save_figure(fig, out_dir / filename))


metric_runs = [df for df in records.values() if len(df) and report.pick_layout(df) == "metrics"]
if metric_runs:
    table = report.metrics_table(report.pd.concat(metric_runs, ignore_index=True))  # cells in table order
    table.cells["row"] = [m if g == "—" else f"{m} ({g})"
                          for m, g in zip(table.cells["metric"], table.cells["grad"])]
    bars(table, "layer metric (Hessian: gradient source)", "Metric comparison", "metric_comparison.png")

ablation_runs = [df for df in records.values() if len(df) and report.pick_layout(df) == "ablation"]
if ablation_runs:
    table = report.ablation_table(report.pd.concat(ablation_runs, ignore_index=True))
    table.cells["row"] = [" + ".join(n for n, on in zip(("HG", "ST", "GT"), flags) if on) or "none"
                          for flags in zip(table.cells["HG"], table.cells["ST"], table.cells["GT"])]
    bars(table, "switches on (HG Hessian metric, ST softmax twin, GT GELU twin)", "Ablation", "ablation_switches.png")

# %%
print("saved:", *[str(p) for p in saved], sep="\n  ")
