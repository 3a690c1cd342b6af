"""results.json: its one writer (`write_results`, used by the job, the sweep's failure records and reused copies,
and after logging), and what a file must hold to be trusted, shared by sweep resume (ptq/sweep.py) and ptq.report.

A resumed sweep skips a job only for a file that parses, is a JSON object with the fields of its status, and has
this code's schema version; anything else is renamed aside (kept for inspection) and the job runs again. No torch
import here: ptq.report reads results without loading the model code.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

RESULTS_FILE = "results.json"
# Version of the results.json layout, written into every file; files without the field are version 1.
# 2: the typed config schema with operand slots (config.quantizer.slots.*, ptq_config.slots), the W&B record.
RESULTS_SCHEMA_VERSION = 2
_NUMBER = (int, float)
REQUIRED_FIELDS = {  # status -> field -> allowed JSON types
    "ok": {"model": (str,), "quantizer": (str,), "top1": _NUMBER, "top1_fp32": _NUMBER, "config": (dict,)},
    "failed": {"error": (str,), "config": (dict,)},
}


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON through a uniquely named temporary file and a rename, so a crash never leaves half a file and
    concurrent writers (two sweeps, threads) never share a temporary file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(out_dir: Path, results: dict) -> Path:
    """Write a job's results.json into `out_dir` (created when missing), atomically; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_FILE
    write_json_atomic(path, results)
    return path


def schema_version(data: dict) -> object:
    return data.get("schema_version", 1)


def results_problem(data: object, versions: range = range(RESULTS_SCHEMA_VERSION, RESULTS_SCHEMA_VERSION + 1)
                    ) -> str | None:
    """Why `data` (a parsed results.json) cannot be trusted, or None when it can. `versions`: accepted
    schema versions (resume: only this code's; the report: every version up to it)."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__ if data is not None else 'null'}, not an object"
    version = schema_version(data)
    if isinstance(version, bool) or version not in versions:
        return f"has schema_version {version!r}; valid: {', '.join(map(str, versions))}"
    status = data.get("status")
    if status not in REQUIRED_FIELDS:
        return f"has status {status!r}; valid: {', '.join(REQUIRED_FIELDS)}"
    for key, types in REQUIRED_FIELDS[status].items():
        value = data.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            return f"has {key}={json.dumps(value, default=str)[:40]} in a '{status}' record; valid: " \
                   f"{' or '.join(t.__name__ for t in types)}"
    return None


def read_results(path: Path, versions: range | None = None) -> tuple[dict | None, str | None]:
    """(the results, None) for a trustworthy file, else (None, why not)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"cannot be read as JSON ({type(e).__name__}: {' '.join(str(e).split())[:80]})"
    problem = results_problem(data, versions) if versions is not None else results_problem(data)
    return (None, problem) if problem else (data, None)


def move_aside(path: Path) -> Path:
    """Rename an untrusted results file next to itself (kept for inspection, never read again as results)."""
    path = Path(path)
    target = path.with_name(f"{path.name}.rejected-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, target)
    return target
