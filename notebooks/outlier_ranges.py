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
# # Stress test-beds: measured post-LayerNorm channel ranges
#
# The outlier profiles (`model/outliers=mild|deit_like|severe`, `ptq/models/outliers.py`) scale a few channels
# after each LayerNorm that feeds a linear and divide the linear's matching input columns, so the float model is
# unchanged while the quantizers see inter-channel variation like a pretrained ViT's. This notebook measures what a
# profile really gives: per LayerNorm, the per-channel range (max - min over all tokens of the calibration images)
# and its max/median ratio, before and after; and the post-softmax / post-GELU distributions (unchanged).
# `ptq/outlier_analysis.py` does the work (the command: `experiments/outliers/analyze.py`); its outputs land in
# `OUT_DIR`.

# %% tags=["parameters"]
MODELS = ["fmnist_vit", "fmnist_swin"]
PROFILES = ["none", "mild", "deit_like", "severe"]
N_IMAGES = None          # calibration images (None: the config's calib.n_images, 32)
OUT_DIR = "experiments/outliers"
ROOT = None              # repository root; None: the first folder above the working directory holding ptq/

# %%
from pathlib import Path

from IPython.display import Image, display

from ptq.outlier_analysis import write_analysis

root = Path(ROOT) if ROOT else next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "ptq").is_dir())

out_dir = Path(OUT_DIR) if Path(OUT_DIR).is_absolute() else root / OUT_DIR
overrides = [] if N_IMAGES is None else [f"calib.n_images={N_IMAGES}"]
summary = write_analysis(MODELS, PROFILES, out_dir, overrides)
summary

# %% [markdown]
# Per-channel ranges, the trained model (grey) against each profile (red), one panel per LayerNorm:

# %%
for model in MODELS:
    for profile in PROFILES:
        if profile != "none":
            display(Image(filename=str(out_dir / f"ranges_{model}_{profile}.png")))
    display(Image(filename=str(out_dir / f"distributions_{model}.png")))
