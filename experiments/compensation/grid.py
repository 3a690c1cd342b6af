"""The compensation grid (experiment=compensation): per model x method x bit width x compensation, top-1,
agreement and KL(fp32 || quantized) as mean ± std over the calibration seeds, the change against compensate=none
of the same model, method and bits (paired by calibration seed: each seed's compensated run minus that seed's
uncompensated one, mean ± std of the differences), and the cost (maps kept, parameters and MACs per image added
at inference, the stage's seconds); a table (grid.md, grid.csv) and a plot of the gains (grid.png).

    python experiments/compensation/grid.py multirun/compensation [more folders] [--out experiments/compensation]

The runs are read as ptq.report reads them (every trusted results.json, copies of a sibling left out); a stressed
test-bed (model/outliers=<profile>) is its own model, `fmnist_vit+severe`. Cells of the declared grid
(conf/experiment/compensation.yaml) with fewer runs than its seeds are listed under the table.
"""
from __future__ import annotations

import argparse
import functools
import math
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from ptq.plot_style import line_colours, save_figure  # noqa: E402
from ptq.report import (  # noqa: E402
    COMP_LABELS,
    METHOD_LABELS,
    _bits_key,
    _method_key,
    _stats,
    compensate_label,
    fmt_cell,
    load_records,
    model_order,
    recon_label,
    usable,
)

NONE = "none"
KEYS = ["model", "method", "bits", "compensation"]
# measure -> (records column, digits); the KL change is relative (%), the others in points
MEASURES = {"top-1": ("top1", 2), "agreement": ("agreement", 2), "KL": ("kl_fp32", 4)}
GRID = ROOT / "conf" / "experiment" / "compensation.yaml"


def runs(folders) -> pd.DataFrame:
    """One row per finished quantized run: its cell (model, method, bits, compensation; the method's official
    form and a reconstruction are part of its name), calibration seed, measures and the compensation's cost."""
    df = usable(load_records(folders))
    df = df[df["enabled"].astype(bool)].copy()
    df["method"] = [" ".join(filter(None, (m if c in (None, "paper") else f"{m} ({c})", recon_label(st))))
                    for m, c, st in zip(df["method"], df["compat"], df["settings"])]   # `RepQ-ViT + BRECQ (...)`
    df["compensation"] = [compensate_label(s).removeprefix("+ ") or NONE for s in df["settings"]]
    df["maps"] = [len((c or {}).get("blocks") or []) if isinstance(c, dict) else 0
                  for c in df["compensation_record"]]
    df["layers"] = [len((c or {}).get("layers") or []) if isinstance(c, dict) else 0
                    for c in df["compensation_record"]]
    none = df["compensation"] == NONE
    for column in ("added_params", "added_macs_per_image", "compensate_seconds", "compensate_kept"):
        df.loc[none, column] = df.loc[none, column].fillna(0)
    return df


@functools.cache
def model_cost(name: str) -> tuple[int, int]:
    """(parameters, multiply-accumulates per image) of the float model `name` (a stressed test-bed: its base
    model): every Linear / Conv2d by forward hooks on one image of the model's input size, plus the attention
    matmuls (q k^T and attn v: 2 N^2 C per block, N the tokens of a window) from each `attn.qkv` output."""
    import timm
    import torch

    import ptq.models  # noqa: F401  (registers the test-bed models with timm)

    model = timm.create_model(name.partition("+")[0]).eval()
    macs = [0]

    def layer(module, _, out):
        if isinstance(module, torch.nn.Linear):
            macs[0] += out.numel() * module.in_features
        else:
            macs[0] += out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)

    def attention(module, _, out):   # out: (windows or images, N, 3C)
        tokens = out.shape[-2]
        macs[0] += 2 * (out.numel() // out.shape[-1] // tokens) * tokens * tokens * module.in_features

    for module_name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.register_forward_hook(layer)
        if module_name.endswith("attn.qkv"):
            module.register_forward_hook(attention)
    with torch.no_grad():
        model(torch.zeros(1, *model.pretrained_cfg["input_size"]))
    return sum(p.numel() for p in model.parameters()), macs[0]


def _with_share(text: str, value: float, total: int) -> str:
    """`37,248 (8.2 %)`: a cost and its share of the float model's."""
    return text if value == 0 else f"{text} ({100.0 * value / total:.1f} %)"


def _paired(cell: pd.DataFrame, base: pd.DataFrame, column: str, relative: bool) -> tuple[float, float, int]:
    """(mean, std, n) over the seeds both hold of the compensated minus the uncompensated value (relative: in %
    of the uncompensated one)."""
    both = cell.merge(base, on="calib_seed", suffixes=("", "_none"))
    if relative:
        diff = 100.0 * (both[column] / both[f"{column}_none"] - 1.0)
    else:
        diff = both[column] - both[f"{column}_none"]
    return _stats(diff)


def _count_text(values: pd.Series) -> str:
    """A cost that is one number for every seed, else its range (maps dropped in some seeds add nothing)."""
    low, high = int(values.min()), int(values.max())
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def _kept_text(cell: pd.DataFrame) -> str:
    if cell["layers"].max() > 0:
        return f"{int(cell['layers'].max())} layers edited"
    if cell["maps"].max() == 0:
        return "—"
    return f"{_count_text(cell['compensate_kept'])} of {int(cell['maps'].max())}"


def signed(mean: float, std: float, n: int, digits: int, unit: str = "") -> str:
    """`+1.36 ± 0.50` (n > 1), `+1.36†` (one seed), "" (no pair); `unit` after the numbers (`-31.0 ± 13.2 %`,
    `-16.9 %†`)."""
    if n == 0 or math.isnan(mean):
        return ""
    return f"{mean:+.{digits}f}" + (f" ± {std:.{digits}f}{unit}" if n > 1 else f"{unit}†")


def comp_key(name: str) -> tuple:
    """none, then the presets in COMP_LABELS order, each paper form before its official one, then any other."""
    labels = list(COMP_LABELS.values())
    base = name.split(" (", 1)[0]
    return (0 if name == NONE else 1, labels.index(base) if base in labels else len(labels), name)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: n seeds, each measure's mean / std, its paired change against none, the cost."""
    rows = []
    for key, cell in df.groupby(KEYS, sort=False):
        entry = dict(zip(KEYS, key))
        base = df[(df["model"] == entry["model"]) & (df["method"] == entry["method"]) & (df["bits"] == entry["bits"])
                  & (df["compensation"] == NONE)]
        entry["n"] = len(cell)
        entry["num_test"] = int(cell["num_test"].max())
        for name, (column, _) in MEASURES.items():
            entry[f"{name} mean"], entry[f"{name} std"], _ = _stats(cell[column])
            delta = _paired(cell, base, column, relative=column == "kl_fp32") if entry["compensation"] != NONE \
                else (float("nan"), float("nan"), 0)
            entry[f"d {name} mean"], entry[f"d {name} std"], entry["pairs"] = delta
        entry["kept"] = _kept_text(cell)
        params, macs = model_cost(entry["model"])
        entry["params added"] = _with_share(_count_text(cell["added_params"]), cell["added_params"].max(), params)
        entry["MACs/image added"] = _with_share(_count_text(cell["added_macs_per_image"]),
                                                cell["added_macs_per_image"].max(), macs)
        entry["comp s mean"], entry["comp s std"], _ = _stats(cell["compensate_seconds"])
        rows.append(entry)
    out = pd.DataFrame(rows)
    models = model_order(out["model"])
    order = [(models.index(r.model), _method_key(r.method.split(" ", 1)[0]), r.method, bits_order(r.bits),
              comp_key(r.compensation)) for r in out.itertuples()]
    return out.iloc[sorted(range(len(out)), key=order.__getitem__)].reset_index(drop=True)


def bits_order(bits: str) -> tuple:
    """W3A3 before W4A4 before W6A6."""
    return tuple(-v for v in _bits_key(bits))


def markdown(s: pd.DataFrame) -> str:
    head = ["model", "method", "bits", "compensation", "seeds", "top-1", "agreement", "KL(fp32 ‖ q)", "Δ top-1",
            "Δ agreement", "Δ KL", "kept", "params added", "MACs/image added", "comp s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in s.iterrows():
        cells = [r["model"], r["method"], r["bits"], r["compensation"], str(r["n"])]
        cells += [fmt_cell(r[f"{m} mean"], r[f"{m} std"], r["n"], digits=d) for m, (_, d) in MEASURES.items()]
        cells += [signed(r[f"d {m} mean"], r[f"d {m} std"], r["pairs"], 2 if m != "KL" else 1, "" if m != "KL" else
                         " %") if r["compensation"] != NONE else "—" for m in MEASURES]
        cells += [r["kept"], r["params added"], r["MACs/image added"],
                  fmt_cell(r["comp s mean"], r["comp s std"], r["n"], digits=1, mark=False)
                  if r["compensation"] != NONE else "0"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def declared_grid() -> tuple[list[str], list[str], list[str], int]:
    """(methods, compensations, bit widths, seeds per cell) of conf/experiment/compensation.yaml."""
    params = yaml.safe_load(GRID.read_text())["hydra"]["sweeper"]["params"]
    split = lambda key: [v.strip() for v in str(params[key]).split(",")]  # noqa: E731
    return split("quantizer"), split("compensate"), split("bits"), len(split("calib.seed"))


def missing_cells(df: pd.DataFrame) -> list[str]:
    """Per model run so far and bit width of the declared grid: its cells (method x compensation) with fewer runs
    than its seeds, `none` where every cell is complete."""
    quantizers, comps, bits, seeds = declared_grid()
    have = df.groupby(["model", "quantizer", "compensate", "bits"]).size().to_dict()
    out = []
    for model in model_order(df["model"]):
        for b in sorted((b.upper() for b in bits), key=bits_order):
            short = [(q, c, have.get((model, q, c, b), 0)) for q in quantizers for c in comps]
            short = [(q, c, n) for q, c, n in short if n < seeds]
            if len(short) == len(quantizers) * len(comps) and not any(n for *_, n in short):
                out.append(f"{model} {b}: all {len(short)} cells (not started)")
            elif short:
                out.append(f"{model} {b}: " + ", ".join(f"{METHOD_LABELS.get(q, q)} {c} ({n} of {seeds} seeds)"
                                                        for q, c, n in short))
    return out


def plot(s: pd.DataFrame, path: Path) -> Path:
    """Rows: per model, the KL change (%) and the top-1 change (points) against none; one panel per bit width;
    x: methods, one bar per compensation (mean ± std of the paired changes)."""
    gains = s[s["compensation"] != NONE]
    models = model_order(gains["model"])
    bits = sorted(gains["bits"].unique(), key=bits_order)
    comps = sorted(gains["compensation"].unique(), key=comp_key)
    colours = line_colours(comps)
    measures = (("KL", "Δ KL(fp32 ‖ q) against none (%)\n(below 0: closer to float)"),
                ("top-1", "Δ top-1 against none (points)"))
    fig, axes = plt.subplots(len(models) * len(measures), len(bits), squeeze=False,
                             figsize=(4.2 * len(bits), 3.2 * len(models) * len(measures)))
    for i, model in enumerate(models):
        for j, b in enumerate(bits):
            cell = gains[(gains["model"] == model) & (gains["bits"] == b)]
            methods = list(dict.fromkeys(s[(s["model"] == model) & (s["bits"] == b)]["method"]))
            width = 0.8 / max(len(comps), 1)
            for k, (name, label) in enumerate(measures):
                ax = axes[i * len(measures) + k][j]
                if not len(cell):   # this model has no compensated run at this bit width (yet)
                    ax.text(0.5, 0.5, f"{model} {b}: not run", ha="center", va="center", transform=ax.transAxes)
                    ax.axis("off")
                    continue
                for c, comp in enumerate(comps):
                    vals, errs = [], []
                    for m in methods:
                        row = cell[(cell["method"] == m) & (cell["compensation"] == comp)]
                        vals.append(row[f"d {name} mean"].iloc[0] if len(row) else float("nan"))
                        err = row[f"d {name} std"].iloc[0] if len(row) else float("nan")
                        errs.append(0.0 if math.isnan(err) else err)
                    ax.bar([x + (c - (len(comps) - 1) / 2) * width for x in range(len(methods))], vals, width,
                           yerr=errs, capsize=2, color=colours[comp], label=comp,
                           error_kw={"elinewidth": 0.8, "ecolor": "0.3"})
                ax.axhline(0.0, color="black", linewidth=0.6)
                ax.set_xticks(range(len(methods)), methods, fontsize=8)
                ax.set_title(f"{model} {b}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(label, fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    by_label = dict(zip(labels, handles))
    axes[0][-1].legend(by_label.values(), by_label.keys(), title="compensation", fontsize=7, title_fontsize=7)
    fig.suptitle(textwrap.fill(sample_caption(s), 55 * len(bits)), fontsize=9)
    return save_figure(fig, path, dpi=110)


def sample_caption(s: pd.DataFrame) -> str:
    ns = sorted({int(v) for v in s["n"]})
    return ("mean ± std (error bars) of the per-seed change over n = " + "/".join(map(str, ns)) +
            " calibration seeds per bar, N = " + "/".join(f"{v:,}" for v in sorted(s["num_test"].unique())) +
            " test images per run")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+", help="sweep folders holding <job>/results.json")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args(argv)
    df = runs(args.folders)
    s = summarize(df)
    args.out.mkdir(parents=True, exist_ok=True)
    s.to_csv(args.out / "grid.csv", index=False)
    missing = missing_cells(df)
    source = ", ".join(str(f) for f in args.folders)
    text = (f"# Compensation grid (experiment=compensation)\n\n{len(df)} runs from {source}; mean ± std over the "
            f"calibration seeds (sample std; † = one seed). Δ = the compensated run minus the run without "
            f"compensation of the same calibration seed (same model, method, bits), mean ± std over the seeds: "
            f"top-1 and agreement in points, KL in % of the uncompensated KL (below 0: closer to float). kept: "
            f"maps kept of the blocks (a range where the seeds differ; ERQ: the layers it edited); params / "
            f"MACs per image: what the kept maps add at inference (in brackets: the largest, in % of the float "
            f"model's parameters / MACs per image, Linear and Conv2d layers and attention matmuls); comp s: the "
            f"stage's seconds.\n\n{markdown(s)}\n")
    if missing:
        text += "\nCells of conf/experiment/compensation.yaml not (fully) run in these folders:\n\n" + \
                "".join(f"- {m}\n" for m in missing)
    (args.out / "grid.md").write_text(text)
    plot(s, args.out / "grid.png")
    print(text)


if __name__ == "__main__":
    main()
