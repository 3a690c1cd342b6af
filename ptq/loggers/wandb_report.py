"""`python -m ptq.report SWEEP... --wandb`: the report's tables as one W&B run in the sweep's group, beside the
sweep's own runs, so the comparison a researcher reads is next to the runs it comes from.

Mode from WANDB_MODE, default offline (like the runs, conf/logger/wandb.yaml); an offline run is written under
`--out` (else the first sweep folder) in `wandb/offline-run-*` and uploaded later with `wandb sync`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ptq.errors import PTQError
from ptq.loggers.wandb_logger import MODES

DEFAULT_PROJECT = "ptq-vit"


def report_project(records: pd.DataFrame) -> str:
    """The W&B project the sweep's runs were logged to (their `logger.project`), else the default."""
    projects = {c.get("logger.project") for c in records["config"]} - {None} if len(records) else set()
    return sorted(projects)[0] if len(projects) == 1 else DEFAULT_PROJECT


def _table(frame: pd.DataFrame):
    """A W&B Table of `frame`; every column as text where its values mix types (W&B wants one type per column)."""
    import wandb

    frame = frame.copy()
    for column in frame.columns:
        kinds = {type(v) for v in frame[column] if v is not None and v == v}
        if len(kinds) > 1:
            frame[column] = [None if v is None or v != v else str(v) for v in frame[column]]
    return wandb.Table(dataframe=frame.reset_index(drop=True))


def log_report(rep: dict, sources, group: str | None = None, out: Path | None = None) -> str:
    """Log every table of `rep["tables"]` that has rows (ptq.report.build_report decides which tables a report
    has) as one run of job type `report`; returns where it went."""
    mode = os.environ.get("WANDB_MODE") or "offline"
    if mode not in MODES:
        raise PTQError(f"WANDB_MODE={mode} is unknown; valid: {', '.join(MODES)}")
    group = group or Path(sources[0]).resolve().name
    if mode == "disabled":
        return f"not logged (WANDB_MODE=disabled), group {group}"
    import wandb

    folder = Path(out) if out is not None else Path(sources[0])
    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=report_project(rep["records"]), group=group, name=f"report-{rep['layout']}",
                     job_type="report", dir=str(folder), mode=mode, reinit="finish_previous",
                     config={"sources": [str(s) for s in sources], "layout": rep["layout"]},
                     settings=wandb.Settings(console="off", x_disable_stats=True, silent=True, init_timeout=60))
    try:
        run.log({name: _table(frame) for name, frame in rep["tables"].items() if len(frame)})
        where = f"{mode} run {run.id} in group {group} of project {run.project}"
        if mode == "offline":
            where += f" ({folder / 'wandb'}; upload: wandb sync {folder}/wandb/offline-run-*)"
    finally:
        run.finish()
    return where
