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
# # Metric fidelity: does the search metric rank scales like the task loss does?
#
# For one layer of the test-bed ViT, the scale search scores every candidate weight scale
# `Δ_i = (α + i(β - α)/n) · Δ0` with a layer metric computed on that layer's output alone. Here each metric's
# score is set against the **true task loss**: KL(float ‖ quantized) of the model's output on the same
# calibration images when only that layer's weight is quantized, at each candidate scale (every other layer
# float, the layer's input float: the setting of the reference's parallel search). Spearman's ρ between the
# score and the negated loss measures how well a metric ranks the candidates (1 = the loss's own ranking).
# Over the whole grid every metric agrees that tiny scales are bad, so ρ is also given near the optimum
# (multipliers ≥ `NEAR`, BasePTQ's α), where the choice is made; the regret is the loss at the metric's
# chosen scale over the smallest loss among the candidates, in percent above it.
# The paper's claim, made measurable: MSE and cosine rank scales differently from the task loss; the
# Hessian-guided metric (with a gradient that is not zero at the float model) follows it.
#
# Saves under `OUT_DIR`: `fidelity_<layer>.png` (scores and loss against the scale), `spearman.png`,
# `spearman.md` / `spearman.csv` (ρ and regret per metric and layer). Run it as a notebook or as a script.

# %% tags=["parameters"]
MODEL = "fmnist_vit"
CHECKPOINT = "checkpoints/fmnist_vit.safetensors"  # None: random weights (smoke tests only)
LAYERS = ["blocks.1.attn.qkv", "blocks.1.attn.proj", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]  # or ["all"]
BITS = 4                # weight bits of the studied layer
N_IMAGES = 32           # calibration images (what the metrics and the loss see)
SEARCH_N = 100          # candidates: PTQ4ViT's grid alpha=0.01, beta=1.2, n=SEARCH_N
NEAR = 0.5              # "near the optimum": candidates with multiplier >= NEAR
METRICS = ["mse", "l1", "cosine", "pearson", "hessian"]
GRADS = ["kl_self", "kl_quant", "pseudo_ce", "label_ce", "fisher"]  # gradient sources of the Hessian metric
OUT_DIR = "experiments/metric_fidelity"
ROOT = None             # repository root; None: the one holding the ptq package (pip install -e .)

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

import ptq
from ptq import plot_style
from ptq.cli import compose_config
from ptq.data import build_data
from ptq.metrics import get_metric
from ptq.models import build_model
from ptq.quant import resolve_ptq_config, set_quant_enabled, wrap_model
from ptq.quant.calibrate import Calibrator
from ptq.quant.modules import QLinear
from ptq.quant.search import evaluate_candidates

root = Path(ROOT) if ROOT else Path(ptq.__file__).resolve().parents[1]
out_dir = Path(OUT_DIR) if Path(OUT_DIR).is_absolute() else root / OUT_DIR
out_dir.mkdir(parents=True, exist_ok=True)
checkpoint = "null" if CHECKPOINT is None else str(CHECKPOINT if Path(CHECKPOINT).is_absolute() else root / CHECKPOINT)
cfg = compose_config([f"model={MODEL}", f"model.checkpoint={checkpoint}", "quantizer=ptq4vit", "metric=hessian",
                      f"bits.w={BITS}", "bits.a=8", f"calib.n_images={N_IMAGES}", f"quantizer.search.n={SEARCH_N}",
                      "logger=none", "device=cpu"])
torch.manual_seed(0)
device = torch.device("cpu")
model = build_model(cfg.model, device).requires_grad_(False)  # gradients flow to layer outputs only
data = build_data(cfg, model)
pcfg = resolve_ptq_config(cfg)
ops = wrap_model(model, pcfg)
cal = Calibrator(model, ops, pcfg, data.calib_images, data.calib_labels, device)
cal.observe()  # min-max initial parameters everywhere (kl_quant's gradient uses them)
layers = [n for n, op in ops.items() if isinstance(op, QLinear)] if LAYERS == ["all"] else list(LAYERS)
multipliers = np.array(pcfg.search.grid())
near = multipliers >= NEAR
print(f"{MODEL}: {len(data.calib_images)} calibration images, W{BITS} weights, {len(multipliers)} candidates, "
      f"layers {layers}")


# %% [markdown]
# ## Scores and task loss over the candidate scales

# %%
@torch.no_grad()
def task_loss(op, params):
    """KL(float || model) on the calibration images with only `op`'s weight quantized, per candidate."""
    set_quant_enabled(model, False)
    q = op.weight_quantizer
    saved = q.param.clone()
    fp = F.log_softmax(cal.fp_logits.double(), -1)
    losses = []
    for p in params:
        q.set_param(p)
        q.enabled = True
        logp = F.log_softmax(model(cal.x).double(), -1)
        losses.append((fp.exp() * (fp - logp)).sum(-1).mean().item())
    q.set_param(saved)
    set_quant_enabled(model, False)
    return np.array(losses)


@torch.no_grad()
def scores_of(op, params, cap, metric):
    return evaluate_candidates(op, "weight", params, cap, get_metric(metric), pcfg.chunk_mb or 8.0,
                               other_quantized=False).sum(1).cpu().numpy()


def metric_scores(op, params):
    """Each metric's total score per candidate (higher is better), as the search computes it."""
    scores, base = {}, None
    for grad in (GRADS if "hessian" in METRICS else GRADS[:1]):
        pcfg.metric, pcfg.grad = "hessian", grad
        cap = cal.capture_layers([name], set())[name]  # float model; g2 from this gradient source
        if base is None:
            base = cap
            for m in METRICS:
                if m != "hessian":
                    scores[m] = scores_of(op, params, cap, m)
        if "hessian" in METRICS:
            scores[f"hessian ({grad})"] = scores_of(op, params, cap, "hessian")
    return scores


rows, curves = [], {}
for name in layers:
    op = ops[name]
    params = op.weight_quantizer.candidates(pcfg.search)
    loss = task_loss(op, params)
    scores = metric_scores(op, params)
    curves[name] = (loss, scores)
    for metric, s in scores.items():
        if np.ptp(s) == 0:
            print(f"{name}: {metric} gives every candidate the same score (a zero gradient?): no ranking")

        def rho(mask, s=s, loss=loss):
            return spearmanr(s[mask], -loss[mask]).statistic if np.ptp(s[mask]) > 0 else float("nan")

        rows.append({"layer": name, "metric": metric, "spearman": rho(near), "spearman_all": rho(np.ones_like(near)),
                     "chosen": multipliers[int(np.argmax(s))], "best": multipliers[int(np.argmin(loss))],
                     "regret": 100 * (loss[int(np.argmax(s))] / loss.min() - 1)})
table = pd.DataFrame(rows)
table


# %% [markdown]
# ## Plots

# %%
def normalized(v):
    v = np.asarray(v, dtype=float)
    span = np.ptp(v)
    return (v - v.min()) / span if span > 0 else np.zeros_like(v)


saved = []


for name, (loss, scores) in curves.items():
    n = len(scores)
    cols = min(5, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(3.2 * cols, 2.7 * ((n + cols - 1) // cols)),
                             squeeze=False, sharex=True)
    for ax, (metric, s) in zip(axes.flat, scores.items()):
        r = table[(table.layer == name) & (table.metric == metric)].iloc[0]
        ax.plot(multipliers[near], normalized(-loss[near]), "k--", lw=1.2, label="−KL (task)")
        ax.plot(multipliers[near], normalized(s[near]), lw=1.2, label="metric score")
        ax.axvline(r["best"], color="k", lw=0.6, alpha=0.5)
        ax.axvline(r["chosen"], color="C0", lw=0.6, alpha=0.8)
        ax.set_title(f"{metric}\nρ = {r['spearman']:.2f} (all: {r['spearman_all']:.2f})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("candidate scale / min-max scale Δ0", fontsize=8)
    fig.suptitle(f"{MODEL} {name} (W{BITS}): metric score vs task loss for multipliers ≥ {NEAR}, both scaled to "
                 f"[0, 1]; vertical lines: best (black) and chosen (blue) scale", fontsize=9)
    saved.append(plot_style.save_figure(fig, out_dir / f"fidelity_{name.replace('.', '_')}.png"))

pivot = table.pivot(index="metric", columns="layer", values="spearman").reindex(list(curves[layers[0]][1]))
pivot = pivot[layers]
fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(pivot)), 3.6))
pivot.plot.bar(ax=ax, width=0.8)
ax.axhline(0, color="k", lw=0.8)
ax.set_ylabel("Spearman ρ (score, −KL)")
ax.set_ylim(-1.05, 1.05)
ax.set_title(f"{MODEL}, W{BITS} weight scale of one layer (multipliers ≥ {NEAR}): rank correlation with the "
             "task loss", fontsize=9)
ax.tick_params(axis="x", labelrotation=30, labelsize=8)
ax.legend(fontsize=7)
saved.append(plot_style.save_figure(fig, out_dir / "spearman.png"))

# %%
summary = table.pivot(index="metric", columns="layer", values="spearman").reindex(pivot.index)[layers]
summary["mean ρ"] = summary.mean(axis=1)
summary["mean ρ, whole grid"] = table.groupby("metric")["spearman_all"].mean()
summary["mean regret (%)"] = table.groupby("metric")["regret"].mean()
summary.round(3).to_csv(out_dir / "spearman.csv")
(out_dir / "spearman.md").write_text(
    f"Spearman ρ between each metric's score and −KL(float ‖ quantized) over the candidate weight scales with "
    f"multiplier ≥ {NEAR} ({int(near.sum())} of {len(multipliers)}; 'whole grid': all of them), W{BITS}, "
    f"{len(data.calib_images)} calibration images, {MODEL}, one layer quantized at a time; regret = how much "
    f"higher (%) the KL at the metric's choice is than the smallest KL over the grid.\n\n"
    + summary.round(3).to_markdown() + "\n")
saved += [out_dir / "spearman.csv", out_dir / "spearman.md"]
print(summary.round(3).to_markdown())
print("saved:", *[str(p) for p in saved], sep="\n  ")
