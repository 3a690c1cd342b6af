"""Sweep bookkeeping: skip jobs whose results already exist for the same config, record failures."""
from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from ptq.app import RESULTS_FILE, resolved_config, write_json_atomic

log = logging.getLogger("ptq")
IGNORED_KEYS = ("force", "progress")


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def existing_results(cfg: DictConfig, out: Path | None) -> dict | None:
    """The results.json in `out` if it finished ok for the same resolved config."""
    if out is None or not (out / RESULTS_FILE).is_file():
        return None
    try:
        old = json.loads((out / RESULTS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if old.get("status") == "ok" and _comparable(old.get("config", {})) == _comparable(resolved_config(cfg)):
        return old
    return None


def run_with_resume(run: Callable, cfg: DictConfig, out: Path | None) -> dict:
    if not cfg.get("force", False):
        old = existing_results(cfg, out)
        if old is not None:
            log.info("results exist for this config in %s: skipped (force=true re-runs)", out)
            return old
    return run(cfg, out)


def record_failure(cfg: DictConfig, out: Path | None, error: BaseException) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RESULTS_FILE, {
        "status": "failed", "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exception(error)[-5:], "config": resolved_config(cfg)})
