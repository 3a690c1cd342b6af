"""Experiment loggers, chosen by `logger=` (conf/logger/): `none` or `wandb`."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ptq.errors import PTQError

LOGGERS = ("none", "wandb")


def log_run(cfg: DictConfig, results: dict, out: Path | None) -> None:
    """Send one finished run (config, summary metrics, calibrated parameters) to the configured logger."""
    name = cfg.get("logger", {}).get("name", "none")
    if name == "none":
        return
    if name == "wandb":
        from ptq.loggers.wandb_logger import log_to_wandb

        log_to_wandb(cfg, results, out)
        return
    raise PTQError(f"unknown logger '{name}'; valid: {', '.join(LOGGERS)}")
