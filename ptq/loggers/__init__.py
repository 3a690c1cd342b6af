"""Experiment loggers, chosen by `logger=` (conf/logger/): `none` or `wandb`.

Logging a finished job to W&B is a recorded step: results.json says `wandb: {state: pending}` before logging and
`done` (or `failed`) after it, so a job killed while logging is logged again from its results.json on resume.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from ptq.errors import PTQError

log = logging.getLogger("ptq")
LOGGERS = ("none", "wandb")
PENDING, DONE = "pending", "done"
INCOMPLETE_PREFIX = "incomplete-"


def logger_name(cfg: DictConfig) -> str:
    """The configured logger's name; checked by the job before any work, so a typo costs no calibration."""
    name = cfg.get("logger", {}).get("name", "none")
    if name not in LOGGERS:
        raise PTQError(f"unknown logger.name={name}; valid: {', '.join(LOGGERS)}")
    return name


def _uses_wandb(cfg: DictConfig) -> bool:
    return logger_name(cfg) == "wandb" and str(cfg.logger.get("mode") or "offline") != "disabled"


def mark_pending(cfg: DictConfig, results: dict) -> None:
    """Record, before results.json is first written, that the W&B record is still to be made."""
    if _uses_wandb(cfg):
        results["wandb"] = {"state": PENDING}


def needs_logging(cfg: DictConfig, results: dict) -> bool:
    """A resumed job whose W&B record was never completed (killed while logging, or logging failed). Files written
    before logging was recorded (no `wandb` field) and copies of a sibling's results are not logged again."""
    state = (results.get("wandb") or {}).get("state") if isinstance(results.get("wandb"), dict) else None
    return _uses_wandb(cfg) and state is not None and state != DONE


def set_incomplete_aside(out: Path | None) -> None:
    """Rename the offline W&B runs of an unfinished logging attempt, so `wandb sync <run>/wandb/offline-run-*`
    uploads only the complete record."""
    folder = Path(out) / "wandb" if out is not None else None
    if folder is None or not folder.is_dir():
        return
    for run_dir in folder.glob("offline-run-*"):
        os.replace(run_dir, run_dir.with_name(INCOMPLETE_PREFIX + run_dir.name))


def log_run(cfg: DictConfig, results: dict, out: Path | None) -> dict | None:
    """Send one finished run (config, summary metrics, calibrated parameters) to the configured logger; returns
    the record to keep in results.json under `wandb` (its state: done or failed), or None when nothing was
    logged. Writes no results file: the job records what this returns (ptq.app.log_and_record)."""
    if not _uses_wandb(cfg):
        return None
    from ptq.loggers.wandb_logger import log_to_wandb

    return log_to_wandb(cfg, results, out)
