"""Which part of a single run's output folder this job created, so that a failed job removes only that.

Hydra creates `hydra.run.dir` (with `mkdir -p`) before the job starts, so inside the job a folder that existed
before cannot be told from one Hydra just made. `RunDirGuard`, a Hydra callback (conf/config.yaml,
`hydra.callbacks`), looks at the folder in `on_run_start`, before Hydra creates it: it resolves `hydra.run.dir`
on the very config object Hydra resolves next (the `${now:...}` resolver caches its value on that object, so both
see the same path) and records the topmost folder of that path that does not exist yet. On failure the job
removes that folder and nothing else; when the run folder existed before (`hydra.run.dir=.`, `outputs`, a user's
own folder), it removes nothing and says where the log is.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

NAME_LIMIT_BYTES = 200  # file systems allow 255 bytes per name; room is left for the job number prefix


def short_dirname(name: str, limit: int = NAME_LIMIT_BYTES) -> str:
    """A job folder name from Hydra's override_dirname: unchanged when it fits the file system's name limit, else
    its beginning and a hash of the whole (the full overrides stay in the job's .hydra/overrides.yaml)."""
    name = str(name)
    if all(len(part.encode()) <= limit for part in name.split("/")):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    head = name.replace("/", "_").encode()[:limit - len(digest) - 1].decode(errors="ignore")
    return f"{head}_{digest}"


# Hydra resolves the sweep subfolder inside each job (in launcher workers too, which import this module when they
# unpickle the callbacks), as ${short_dirname:${hydra:job.override_dirname}}.
OmegaConf.register_new_resolver("short_dirname", short_dirname, replace=True)
import ptq.run_name  # noqa: E402,F401 - registers ${run_variant:...} of hydra.run.dir

# resolved run folder -> the topmost folder this run creates (None: the run folder existed already)
_CREATED: dict[Path, Path | None] = {}


def first_missing(path: Path) -> Path | None:
    """The topmost ancestor of `path` (or `path` itself) that does not exist; None when `path` exists."""
    path = path.absolute()
    if path.exists():
        return None
    top = path
    for parent in path.parents:
        if parent.exists():
            break
        top = parent
    return top


def note_run_dir(run_dir: str | Path) -> None:
    """Record, before the folder is created, what of `run_dir` a run into it will create."""
    path = Path(run_dir).absolute()
    _CREATED.setdefault(path, first_missing(path))


def created_by_run(run_dir: Path) -> Path | None:
    """The folder to remove when the run into `run_dir` fails: the topmost one it created, or None when it
    created none (or when nobody recorded the folder before it was made: then nothing is removed)."""
    return _CREATED.get(Path(run_dir).absolute())


def remove_created(run_dir: Path) -> Path | None:
    """Remove what the failed run into `run_dir` created (the whole new subtree); returns the removed folder."""
    top = created_by_run(run_dir)
    if top is None:
        return None
    logging.shutdown()  # close the job's log file before its folder goes
    shutil.rmtree(top, ignore_errors=True)
    return top


class RunDirGuard(Callback):
    """Hydra callback: note, before Hydra creates it, which folders of a single run's `hydra.run.dir` are new."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = OmegaConf.select(config, "hydra.run.dir")
        if run_dir is not None:
            note_run_dir(str(run_dir))
