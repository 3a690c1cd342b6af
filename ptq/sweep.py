"""Sweep bookkeeping: skip jobs whose results already exist for the same config, reuse the results of a sibling
job whose config differs only in unused settings, record failures."""
from __future__ import annotations

import copy
import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from ptq.app import RESULTS_FILE, resolved_config, write_json_atomic

log = logging.getLogger("ptq")
IGNORED_KEYS = ("force", "progress", "threads")


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def effective_config(config: dict) -> dict:
    """The part of a resolved config that can change a job's numbers: the float model (quantizer.enabled false)
    ignores bits, metric, calibration and method settings; a disabled operand slot's settings are unused (its
    operands take the parent slot's); only the Hessian metric reads metric.grad, and only its `fisher` source
    (or reconstruction with recon.loss=fisher) reads metric.fisher_draws; recon.name=none uses no other recon
    key. Jobs with equal effective configs give equal results."""
    from ptq.metrics import NEEDS_GRAD

    c = copy.deepcopy(_comparable(config))
    quantizer = c.get("quantizer") or {}
    if not quantizer.get("enabled", True):
        for key in ("bits", "metric", "calib", "recon"):
            c.pop(key, None)
        c["quantizer"] = {"enabled": False}
        return c
    for name, slot in (quantizer.get("slots") or {}).items():
        if isinstance(slot, dict) and slot.get("enabled") is False:
            quantizer["slots"][name] = {"enabled": False}
    recon = c.get("recon") or {}
    if recon.get("name", "none") == "none":  # no reconstruction: its settings are unused
        c["recon"] = {"name": "none"}
    metric = c.get("metric") or {}
    hessian = metric.get("name") in NEEDS_GRAD
    if not hessian:  # no gradient is computed for these metrics
        metric.pop("grad", None)
    draws_read = (hessian and metric.get("grad") in (None, "fisher")) or c["recon"].get("loss") == "fisher"
    if not draws_read:
        metric.pop("fisher_draws", None)
    return c


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


def equivalent_results(cfg: DictConfig, out: Path | None) -> tuple[Path, dict] | None:
    """A finished sibling job of the same sweep (another subfolder of out's parent) whose effective config equals
    this job's, e.g. the fp32 job of another bit width, or a non-Hessian metric with another metric.grad."""
    if out is None or not out.parent.is_dir():
        return None
    mine = effective_config(resolved_config(cfg))
    for path in sorted(out.parent.glob(f"*/{RESULTS_FILE}")):
        if path.parent == out:
            continue
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if old.get("status") == "ok" and effective_config(old.get("config", {})) == mine:
            return path.parent, old
    return None


def run_with_resume(run: Callable, cfg: DictConfig, out: Path | None, reuse_siblings: bool = False) -> dict:
    """Skip the job when `out` holds results for the same config (unless force=true). With `reuse_siblings` (in
    sweeps), copy the results of a sibling job whose config differs only in settings the job does not use; the
    copy records `duplicate_of` and is not logged again."""
    if not cfg.get("force", False):
        old = existing_results(cfg, out)
        if old is not None:
            log.info("results exist for this config in %s: skipped (force=true re-runs)", out)
            return old
        found = equivalent_results(cfg, out) if reuse_siblings else None
        if found is not None:
            source, old = found
            log.info("same effective config as %s: its results reused (force=true re-runs)", source.name)
            results = {k: v for k, v in old.items() if k != "params_file"}
            results.update(config=resolved_config(cfg), duplicate_of=source.name)
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / RESULTS_FILE, results)
            return results
    return run(cfg, out)


def record_failure(cfg: DictConfig, out: Path | None, error: BaseException) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RESULTS_FILE, {
        "status": "failed", "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exception(error)[-5:], "config": resolved_config(cfg)})
