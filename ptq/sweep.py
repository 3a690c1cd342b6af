"""Sweep bookkeeping: skip jobs whose results already exist for the same config, reuse the results of a sibling
job whose config differs only in unused settings, record failures.

Only a trustworthy results.json (ptq/results_file.py: parses, has the fields of its status and this code's schema
version, and belongs to the job of its folder by the folder's Hydra record) counts: a job's own untrusted file is
renamed aside and the job runs again; an untrusted sibling file is ignored (it belongs to another job, which sets it
aside when it runs)."""
from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from ptq.app import resolved_config
from ptq.job_identity import job_identity
from ptq.results_file import BOOKKEEPING_KEYS as IGNORED_KEYS
from ptq.results_file import RESULTS_FILE, RESULTS_SCHEMA_VERSION, job_mismatch, read_results, reject, write_results

log = logging.getLogger("ptq")


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def effective_config(config: dict) -> dict:
    """The part of a resolved config that can change a job's numbers: the config restricted to the keys its
    evaluation, its method's stages and slots declare they read (ptq/job_identity.py). Jobs with equal effective
    configs give equal results."""
    return job_identity(_comparable(config))


def existing_results(cfg: DictConfig, out: Path | None) -> dict | None:
    """The results.json in `out` if it finished ok for the same resolved config. An untrusted file is renamed
    aside (kept) so that the job runs again."""
    path = out / RESULTS_FILE if out is not None else None
    if path is None or not os.path.lexists(path):
        return None
    old, problem = read_results(path)
    problem = problem or job_mismatch(path, old)   # e.g. a file copied from another job's folder
    if problem is not None:
        reject(path, problem)   # the job runs again
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
        old, _ = read_results(path)
        if old is not None and old.get("status") == "ok" and effective_config(old.get("config", {})) == mine \
                and job_mismatch(path, old) is None:   # a file that is not its own folder's job's is never reused
            return path.parent, old
    return None


def run_with_resume(run: Callable, cfg: DictConfig, out: Path | None, reuse_siblings: bool = False) -> dict:
    """Skip the job when `out` holds results for the same config (unless force=true). With `reuse_siblings` (in
    sweeps), copy the results of a sibling job whose config differs only in settings the job does not use; the
    copy records `duplicate_of` and is not logged again. A skipped job whose W&B record was never completed is
    logged now from its results.json."""
    if not cfg.get("force", False):
        old = existing_results(cfg, out)
        if old is not None:
            log.info("results exist for this config in %s: skipped (force=true re-runs)", out)
            _complete_logging(cfg, old, out)
            return old
        found = equivalent_results(cfg, out) if reuse_siblings else None
        if found is not None:
            source, old = found
            log.info("same effective config as %s: its results reused (force=true re-runs)", source.name)
            results = {k: v for k, v in old.items() if k not in ("params_file", "weights_file", "wandb")}
            results.update(config=resolved_config(cfg), duplicate_of=source.name)
            write_results(out, results)
            return results
    return run(cfg, out)


def _complete_logging(cfg: DictConfig, results: dict, out: Path | None) -> None:
    from ptq.app import log_and_record
    from ptq.loggers import needs_logging, set_incomplete_aside

    if needs_logging(cfg, results):
        log.info("the W&B record of %s was not completed: logging it from results.json", out)
        set_incomplete_aside(out)
        log_and_record(cfg, results, out)


def record_failure(cfg: DictConfig, out: Path | None, error: BaseException) -> None:
    if out is None:
        return
    write_results(out, {
        "status": "failed", "schema_version": RESULTS_SCHEMA_VERSION, "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exception(error)[-5:], "config": resolved_config(cfg)})
