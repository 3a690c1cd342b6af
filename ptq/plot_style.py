"""What every figure of the lab shares (notebooks/, experiments/*/plot*.py, ptq.report): one colour per line in
every panel, the model label of a stressed test-bed, the PNG writer."""
from __future__ import annotations

from pathlib import Path


def outlier_profile(cfg: dict) -> str | None:
    """The stress profile of the run's model (`model.outliers.profile`, ptq/models/outliers.py), None when off."""
    profile = ((cfg.get("model") or {}).get("outliers") or {}).get("profile")
    return None if profile in (None, "none") else str(profile)


def model_label(data: dict, cfg: dict) -> str:
    """The model's name; a stressed test-bed (an outlier profile) is its own model: `fmnist_vit+deit_like`."""
    name = data.get("model") or (cfg.get("model") or {}).get("name") or "?"
    profile = outlier_profile(cfg)
    return f"{name}+{profile}" if profile else name


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure of the notebooks as PNG (folders created); the figure stays open for display."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def line_colours(keys) -> dict:
    """One matplotlib colour (C0..C9, cycling) per distinct key, in sorted order: a method keeps its colour in every
    panel of a figure even where some of the methods are missing."""
    return {key: f"C{i % 10}" for i, key in enumerate(sorted(set(keys)))}
