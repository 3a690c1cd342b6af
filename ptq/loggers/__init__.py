"""Experiment loggers, chosen by `logger=` (conf/logger/): `none` or `wandb`."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ptq.errors import PTQError

LOGGERS = ("none", "wandb")


def logger_name(cfg: DictConfig) -> str:
    """The configured logger's name; checked by the job before any work, so a typo costs no calibration."""
    name = cfg.get("logger", {}).get("name", "none")
    if name not in LOGGERS:
        raise PTQError(f"unknown logger.name={name}; valid: {', '.join(LOGGERS)}")
    return name


def log_run(cfg: DictConfig, results: dict, out: Path | None) -> None:
    """Send one finished run (config, summary metrics, calibrated parameters) to the configured logger."""
    if logger_name(cfg) == "wandb":
        from ptq.loggers.wandb_logger import log_to_wandb

        log_to_wandb(cfg, results, out)
