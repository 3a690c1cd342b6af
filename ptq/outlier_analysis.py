"""Measured post-LayerNorm channel ranges of the test-bed models with and without each outlier profile (issue 10).

For each model and profile: the per-channel range (max - min over all tokens of the calibration images) after every
LayerNorm that feeds a linear, its max/median ratio, and the post-softmax / post-GELU distributions (unchanged by
the function-preserving transform, shown for reference). `write_analysis` writes ranges.md / ranges.csv, one PNG
per model and profile (ranges before / after, per LayerNorm) and one per model (softmax, GELU). Used by
experiments/outliers/analyze.py (the command) and notebooks/outlier_ranges.py.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ptq.cli import compose_config
from ptq.data.dataset import build_data
from ptq.models import build_model
from ptq.models.activation_ranges import ActivationStats, measure, range_ratio

PROFILES = ("none", "mild", "deit_like", "severe")
MODELS = ("fmnist_vit", "fmnist_swin")


def measure_model(model_name: str, profile: str, overrides=()) -> tuple[ActivationStats, int]:
    """Stats of `model_name` with `profile` on the calibration images of the composed config."""
    cfg = compose_config([f"model={model_name}", f"model/outliers={profile}", "logger=none", *overrides])
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg.model, "cpu")
    data = build_data(cfg, model)
    return measure(model, data.calib_images), len(data.calib_images)


def ratio_rows(model: str, profile: str, stats: ActivationStats) -> list[dict]:
    return [{"model": model, "profile": profile, "layernorm": name, "channels": r.numel(),
             "median_range": float(torch.quantile(r.double(), 0.5)), "max_range": float(r.max()),
             "max_over_median": range_ratio(r)}
            for name, r in stats.ranges().items()]


def plot_ranges(model: str, profile: str, before: ActivationStats, after: ActivationStats, out: Path, dpi: int):
    import matplotlib.pyplot as plt

    names = list(before.ranges())
    cols = 3
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        rb, ra = before.ranges()[name], after.ranges()[name]
        x = range(rb.numel())
        ax.bar(x, ra.numpy(), width=1.0, color="tab:red", label=profile)
        ax.bar(x, rb.numpy(), width=1.0, color="tab:grey", label="none")
        ax.set_title(f"{name}: {range_ratio(rb):.1f}x -> {range_ratio(ra):.1f}x", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"{model}: per-channel post-LayerNorm range (max - min), none vs {profile}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"ranges_{model}_{profile}.png", dpi=dpi)
    plt.close(fig)


def plot_distributions(model: str, stats: ActivationStats, out: Path, dpi: int):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3))
    for name, v in stats.softmax.items():
        a.hist(v.numpy(), bins=100, histtype="step", log=True, label=name)
    a.set_title("post-softmax probabilities", fontsize=9)
    for name, v in stats.gelu.items():
        b.hist(v.numpy(), bins=100, histtype="step", log=True, label=name)
    b.set_title("post-GELU (fc2 input)", fontsize=9)
    for ax in (a, b):
        ax.legend(fontsize=5)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{model}: same for every profile (the transform keeps the function)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"distributions_{model}.png", dpi=dpi)
    plt.close(fig)


def summarize(per_norm: pd.DataFrame) -> pd.DataFrame:
    """Per model and profile: the max/median ratio's median and max over the LayerNorms."""
    g = per_norm.groupby(["model", "profile"], sort=False)["max_over_median"]
    return pd.DataFrame({"median_over_layernorms": g.median(), "max_over_layernorms": g.max(),
                         "layernorms": g.size()}).reset_index()


def write_analysis(models, profiles, out: Path, overrides=(), dpi: int = 80) -> pd.DataFrame:
    """Measure, plot and write ranges.md / ranges.csv under `out`; returns the per-model summary."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in models:
        base, n_images = measure_model(model, "none", overrides)
        plot_distributions(model, base, out, dpi)
        for profile in profiles:
            stats = base if profile == "none" else measure_model(model, profile, overrides)[0]
            rows += ratio_rows(model, profile, stats)
            if profile != "none":
                plot_ranges(model, profile, base, stats, out, dpi)
    per_norm = pd.DataFrame(rows)
    summary = summarize(per_norm)
    text = (f"# Post-LayerNorm channel ranges ({n_images} calibration images per model)\n\n"
            "Regenerate: `python experiments/outliers/analyze.py`. max_over_median = largest per-channel range "
            "(max - min over all tokens) / the median channel's, per LayerNorm that feeds a linear.\n\n"
            "## Summary\n\n" + summary.to_markdown(index=False, floatfmt=".2f") +
            "\n\n## Per LayerNorm\n\n" + per_norm.to_markdown(index=False, floatfmt=".3f") + "\n")
    (out / "ranges.md").write_text(text)
    per_norm.to_csv(out / "ranges.csv", index=False)
    print(text)
    return summary
