"""A multirun's exit status: non-zero when any job failed, with a one-line summary (n ok, n failed, where).

Hydra's multirun returns from `hydra.main` without the jobs' outcomes, and with the joblib launcher the jobs run in
other processes. So `MultirunSummary` (a Hydra callback, conf/config.yaml) makes a folder for this multirun's
outcomes in the sweep folder before the jobs start and names it in an environment variable (inherited by launcher
workers); every job writes its outcome there (`record_outcome`); at the end the callback prints the summary and
keeps the exit code, which run.py returns (`exit_code`). An outcome that cannot be written (disk full) is kept in
this process instead, so the summary still counts it (jobs of the basic launcher run in this process).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("ptq")
ENV_VAR = "PTQ_MULTIRUN_OUTCOMES"
OUTCOMES_DIR = ".outcomes"
EXIT_JOBS_FAILED = 3  # a multirun in which at least one job failed
_LAST: dict[str, int] = {}  # exit code of the multirun that ended in this process
_UNWRITTEN: list[dict] = []  # outcomes of this process's jobs that could not be written to the outcomes folder


def record_outcome(out: Path | None, error: BaseException | None) -> None:
    """Note this job's outcome for the multirun's summary (no-op outside a multirun started by run.py)."""
    from ptq.results_file import write_json_atomic

    folder = os.environ.get(ENV_VAR)
    if not folder:
        return
    record = {"dir": str(out) if out is not None else "?", "status": "failed" if error else "ok",
              "error": f"{type(error).__name__}: {error}"[:300] if error else None}
    try:
        write_json_atomic(Path(folder) / f"{os.getpid()}-{uuid.uuid4().hex}.json", record)
    except OSError as e:   # the sweep goes on; the summary counts the outcome kept here
        log.error("the outcome of job %s cannot be written (%s): kept in memory for the summary", out, e)
        _UNWRITTEN.append(record)


def summarize(folder: Path, sweep_dir: str) -> tuple[str, int]:
    """(the one-line summary, the exit code) of the outcomes in `folder` and those kept in memory."""
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] + _UNWRITTEN
    failed = sorted(r["dir"] for r in records if r["status"] != "ok")
    n_ok = len(records) - len(failed)
    line = f"multirun {sweep_dir}: {len(records)} jobs, {n_ok} ok, {len(failed)} failed"
    if failed:
        names = [Path(d).name for d in failed]
        line += f": {'; '.join(names[:10])}{' ...' if len(names) > 10 else ''} (see their results.json)"
    return line, EXIT_JOBS_FAILED if failed else 0


class MultirunSummary(Callback):
    """Hydra callback: collect the jobs' outcomes of a multirun and print the summary line at its end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _LAST.clear()
        _UNWRITTEN.clear()
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        folder = sweep_dir / OUTCOMES_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:   # the outcomes are then kept in memory (record_outcome)
            log.error("the outcomes folder %s cannot be created (%s)", folder, e)
        os.environ[ENV_VAR] = str(folder)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = os.environ.pop(ENV_VAR, None)
        if not folder:
            return
        line, code = summarize(Path(folder), str(OmegaConf.select(config, "hydra.sweep.dir")))
        _UNWRITTEN.clear()
        shutil.rmtree(folder, ignore_errors=True)
        try:
            Path(folder).parent.rmdir()  # the outcomes folder, when no other multirun is using it
        except OSError:
            pass
        print(line, file=sys.stderr)
        _LAST["code"] = code


def exit_code() -> int:
    """The exit code of the multirun that just ended in this process (0 when none did, or all jobs were ok)."""
    return _LAST.pop("code", 0)
