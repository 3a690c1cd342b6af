"""results.json: its one writer (`write_results`, used by the job, the sweep's failure records and reused copies,
and after logging), and what a file must hold to be trusted, shared by sweep resume (ptq/sweep.py) and ptq.report.

A resumed sweep skips a job only for a file that parses, is a JSON object with the fields of its status, and has
this code's schema version; anything else is renamed aside (kept for inspection) and the job runs again. No torch
import here: ptq.report reads results without loading the model code.

A file must also belong to its job folder (`job_mismatch`): its recorded config must agree with what Hydra
recorded for the job that ran there (`.hydra/overrides.yaml`, `.hydra/config.yaml`), so that a results.json copied
from another job, or of another model, is never counted; `reject_untrusted` also finds one run counted twice.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from ptq.errors import writing

log = logging.getLogger("ptq")
RESULTS_FILE = "results.json"
PARAMS_FILE = "quant_params.safetensors"   # a quantized run's calibrated parameters, beside its results.json
JOB_RECORD = ".hydra"   # Hydra's record of the job that ran in a folder: overrides.yaml, config.yaml
# Job control, the one list of settings that cannot change any number of a job (whether to overwrite, the progress
# bar, CPU threads): resume and the trust check skip them (`job_mismatch`), a sweep's job key drops them
# (ptq/sweep.py), no stage or evaluation reads them (so ptq/job_identity.py's identity, the config restricted to what
# is read, never holds them; tests/test_bookkeeping_keys.py checks), Hydra's folder names exclude them
# (conf/config.yaml). ptq.report's LABEL_IGNORED_KEYS adds the keys a column label leaves out although resume
# compares them.
BOOKKEEPING_KEYS = ("force", "progress", "threads")
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
    concurrent writers (two sweeps, threads) never share a temporary file. A write error names the file."""
    with writing(path):
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


def flat_config(config: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in (config or {}).items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same(saved: object, recorded: object) -> bool:
    return saved == recorded or (isinstance(saved, str) != isinstance(recorded, str) and str(saved) == str(recorded))


def _differs(config: dict, key: str, recorded: object, source: str) -> str | None:
    """Why config[key] disagrees with the job record's value (None: it agrees, or the key is not an identity)."""
    if key.split(".")[0] in BOOKKEEPING_KEYS or (isinstance(recorded, str) and "${" in recorded):
        return None  # bookkeeping, or an interpolation resolved when the job ran (e.g. an environment variable)
    if key not in config:
        return f"lacks {key}, which the job in its folder ran with ({JOB_RECORD}/{source}: {key}={recorded!r})"
    if not _same(config[key], recorded):
        return (f"holds the result of {key}={json.dumps(config[key], default=str)}, but the job in its folder ran "
                f"with {key}={json.dumps(recorded, default=str)} ({JOB_RECORD}/{source})")
    return None


def job_mismatch(path: Path, data: dict) -> str | None:
    """Why the results `data` (read from `path`) do not belong to the job of their folder, or None when they do or
    the folder holds no Hydra record to check them against. Checked: every `key=value` override of
    `.hydra/overrides.yaml`, then every setting of `.hydra/config.yaml` (group choices such as `model=`, defaults),
    against the file's resolved `config`; bookkeeping keys (force, progress, threads) are not part of a job."""
    from omegaconf import OmegaConf

    record = Path(path).parent / JOB_RECORD
    config = flat_config(data.get("config") or {})
    overrides, composed = record / "overrides.yaml", record / "config.yaml"
    try:
        if overrides.is_file():
            from hydra.core.override_parser.overrides_parser import OverridesParser

            for o in OverridesParser.create().parse_overrides([str(x) for x in OmegaConf.load(overrides)]):
                key = o.key_or_group
                if o.is_delete() or (key not in config and "." not in key) or isinstance(o.value(), dict):
                    continue  # a group choice (`model=...`: config.yaml holds its settings), a deletion, a node
                why = _differs(config, key, o.value(), "overrides.yaml")
                if why:
                    return why
        if composed.is_file():
            recorded = flat_config(OmegaConf.to_container(OmegaConf.load(composed), resolve=False))
            for key, value in recorded.items():
                why = _differs(config, key, value, "config.yaml")
                if why:
                    return why
    except Exception as e:  # noqa: BLE001 - an unreadable record cannot vouch for the file
        why = " ".join(str(e).split())[:80]
        return f"cannot be checked against its job record {record} ({type(e).__name__}: {why})"
    return None


def reject(path: Path, reason: str) -> str:
    """Move an untrusted results file aside with one warning line; returns the reason with where it went."""
    aside = move_aside(path)
    log.warning("%s %s: moved aside to %s, not trusted", path, reason, aside.name)
    return f"{reason} (moved aside to {aside.name})"


def _fingerprint(data: dict) -> str:
    """The run's record without its W&B bookkeeping: two files with equal fingerprints are one run copied."""
    return json.dumps({k: v for k, v in data.items() if k != "wandb"}, sort_keys=True, default=str)


def reject_untrusted(found: list[tuple[Path, dict]]) -> dict[Path, str]:
    """Of the readable results (path, data) of a report: those that do not belong to their job folder, and every
    copy of one run but one (the one kept lies in a folder whose job record it matches, when there is such a copy),
    each moved aside with a warning -> {path: why}. Files in folders without a record are trusted as they are."""
    rejected = {path: reject(path, why) for path, data in found if (why := job_mismatch(path, data))}
    first: dict[str, Path] = {}
    for path, data in sorted(((p, d) for p, d in found if p not in rejected),
                             key=lambda pd: not (pd[0].parent / JOB_RECORD).is_dir()):
        key = _fingerprint(data)
        if key in first and first[key].resolve() != path.resolve():   # the same file listed twice is no copy
            rejected[path] = reject(path, f"is a copy of the run of {first[key]}")
        else:
            first[key] = path
    return rejected
