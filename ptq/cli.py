"""What run.py does around `ptq.app.run`: one-line errors, failure records in sweeps, no half-written results."""
from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from pathlib import Path

from omegaconf import DictConfig

import ptq.plugins  # noqa: F401  (the plug-in stages, reconstruction: a composed config resolves with them)
import ptq.schema  # noqa: F401  (registers the typed config schema before Hydra composes)
from ptq.config_keys import check_known_keys
from ptq.errors import PTQError, WriteError
from ptq.job_lock import job_lock
from ptq.multirun import record_outcome
from ptq.run_dir import first_missing, remove_created

log = logging.getLogger("ptq")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "data", "quantizer", "metric", "bits", "calib", "logger", "experiment")


EXIT_BAD_INPUT, EXIT_UNEXPECTED = 2, 1  # exit codes; a multirun with failed jobs: ptq.multirun.EXIT_JOBS_FAILED


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_config(overrides=(), hydra_config: bool = False, config_name: str = "config") -> DictConfig:
    """conf/<config_name>.yaml composed with `overrides` through Hydra's compose API (no run folder, no job)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="check"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=hydra_config)


def _first_lines(text: str, stop: str = "Config search path") -> str:
    """Hydra's multi-line message up to its search-path listing, as one line."""
    return " ".join(text.split(stop)[0].split())


def _composed_keys(key: str, line: str, overrides: list[str]) -> tuple[str, list[str]]:
    """The keys that do exist at the closest existing level above `key` in the config composed without `line`."""
    from omegaconf import OmegaConf

    node_path, keys = key, []
    try:
        cfg = compose_config([o for o in overrides if o != line], hydra_config=key.startswith("hydra."))
        while node_path:
            node_path = node_path.rpartition(".")[0]
            node = OmegaConf.select(cfg, node_path) if node_path else cfg
            if isinstance(node, DictConfig):
                keys = sorted(str(k) for k in node.keys() if node_path or k != "hydra")
                break
    except Exception:  # noqa: BLE001 - the message is still useful without the list
        pass
    return node_path, keys


def _unknown_key_message(key: str, line: str, overrides: list[str]) -> str:
    """`quantizer.bogus=1` -> the keys the schema declares at the closest level (a typed group takes no new
    key); a key of a free-form dictionary (`model.kwargs.x=1`) or of Hydra's config -> the keys it has now, and
    for a free-form dictionary how to add one."""
    from ptq.config_keys import schema_level, unknown_key_message
    from ptq.schema import Config

    parent, valid, free_form = schema_level(Config, key)
    if not free_form and not key.startswith("hydra."):
        return unknown_key_message(key, parent, valid, Config, line)
    node_path, keys = _composed_keys(key, line, overrides)
    where = f"keys of {node_path}" if node_path else "top-level keys"
    value = line.split("=", 1)[1] if "=" in line else ""
    hint = f" (a new key is added with +{key}={value})" if free_form else ""
    return f"unknown config key '{key}' in {line}; valid {where}: {', '.join(keys) or '(none)'}{hint}"


def _type_error_message(error, parsed) -> str:
    """`seed=abc` refused by the typed schema -> one line naming the key, the value and what is valid."""
    from ptq.validation import valid_text

    key = str(error.full_key)
    value = next((o.input_line.split("=", 1)[1] for o in parsed if o.key_or_group == key and o.input_line),
                 str(getattr(error, "value", "?")))
    expected = re.search(r"converted to (\w+)|not a valid (\w+)", str(error))
    kinds = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "bool": "true or false"}
    name = (expected.group(1) or expected.group(2)) if expected else ""
    wanted = kinds.get(name, name or "another type")
    return f"{key}={value} is not {wanted}; valid: {valid_text(key) or wanted}"


def check_overrides(overrides: list[str]) -> None:
    """Compose the config with the command-line overrides (one job, no sweep) and turn Hydra's multi-line
    composition errors (unknown key, parse error, missing option) into one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        fail(f"cannot parse the override: {_first_lines(str(e), 'See https://')}")
    if any(o.is_sweep_override() for o in parsed):
        return  # a grid: every job is checked by Hydra when it starts, failures are recorded per job
    try:
        cfg = compose_config(overrides, hydra_config=True)
    except MissingConfigException as e:
        fail(_first_lines(str(e)))
    except ConfigCompositionException as e:
        m = re.match(r"Could not override '([^']+)'", str(e))
        if m and isinstance(e.__cause__, (ConfigAttributeError, ConfigKeyError)):
            key = m.group(1)
            line = next((o.input_line for o in parsed if o.key_or_group == key), key)
            fail(_unknown_key_message(key, line, overrides))
        if isinstance(e.__cause__, ValidationError) and getattr(e.__cause__, "full_key", None):
            fail(_type_error_message(e.__cause__, parsed))
        cause = f": {_first_lines(str(e.__cause__))}" if e.__cause__ else ""
        fail(f"{_first_lines(str(e)).removesuffix('.')}{cause}")
    except Exception as e:  # noqa: BLE001 - anything else Hydra rejects while composing
        fail(f"config cannot be composed ({type(e).__name__}): {_first_lines(str(e))}")
    try:
        check_known_keys(cfg)  # `+calib.n_image=64` composes (Hydra's + adds keys to typed nodes): refused here
    except PTQError as e:
        fail(str(e))
    check_writable(cfg)


def check_writable(cfg: DictConfig) -> None:
    """hydra.run.dir must be creatable: its nearest existing folder must accept a new entry (probed with a
    temporary folder, removed at once), else Hydra fails with a traceback before the job starts."""
    import tempfile

    from omegaconf import OmegaConf

    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    if run_dir is None:
        return
    path = Path(str(run_dir)).absolute()
    top = first_missing(path)
    existing = path if top is None else top.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        Path(tempfile.mkdtemp(prefix=".ptq-write-check-", dir=existing)).rmdir()
    except OSError as e:
        fail(f"hydra.run.dir={run_dir} cannot be written ({type(e).__name__}: {e.strerror or e}); valid: a folder "
             "this user may create files in")


def model_aliases() -> dict[str, str]:
    """timm name (with and without its weights tag) -> the short model config naming it, read from the `name:` of
    every conf/model/*.yaml, so a config added there is its own alias table."""
    import yaml

    aliases = {}
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        name = (yaml.safe_load(path.read_text()) or {}).get("name")
        if isinstance(name, str):
            aliases.update({alias: path.stem for alias in (name, name.split(".", 1)[0]) if alias != path.stem})
    return aliases


def replace_model_aliases(argv: list[str]) -> list[str]:
    """`model=<timm name>` (also in a sweep list) -> `model=<short config>`, with a deprecation warning; the timm
    name itself still works as `model.name=...`."""
    import warnings

    aliases, out = model_aliases(), []
    for arg in argv:
        m = re.fullmatch(r"([+~]?model=)(choice\(|glob\()?(.*?)(\))?", arg)
        if m and any(v.strip() in aliases for v in m.group(3).split(",")):
            for v in (v.strip() for v in m.group(3).split(",")):
                if v in aliases:
                    warnings.warn(f"model={v} is deprecated: use model={aliases[v]} (or model.name={v})",
                                  FutureWarning, stacklevel=2)
            values = ",".join(aliases.get(v.strip(), v.strip()) for v in m.group(3).split(","))
            arg = f"{m.group(1)}{m.group(2) or ''}{values}{m.group(4) or ''}"
        out.append(arg)
    return out


def check_argv(argv: list[str]) -> list[str]:
    """Reject bad command-line input in one line before Hydra starts a job (and writes a run folder): an unknown
    config-group option (`model=foo`, sweeps too), then, for a single job given only overrides, anything Hydra
    cannot compose (`quantizer.bogus=1`). Returns the arguments with deprecated model aliases replaced."""
    argv = replace_model_aliases(argv)
    for arg in argv:
        m = re.fullmatch(r"[+~]?(\w+)=(.*)", arg)
        if not m or m.group(1) not in GROUPS:
            continue
        group, value = m.groups()
        value = re.sub(r"^(choice|glob)\((.*)\)$", r"\2", value)
        for option in filter(None, (v.strip() for v in value.split(","))):
            if option in ("null",):
                continue
            if option not in group_options(group):
                fail(f"unknown {group} '{option}'; valid: {', '.join(group_options(group)) or '(none)'}")
    if argv and not any(a.startswith("-") for a in argv):  # flags (-m, --cfg, -cn ...) are left to Hydra
        check_overrides(argv)
    return argv


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def _output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return None


def parallel_jobs() -> int:
    """How many jobs run at once in this process's sweep: hydra.launcher.n_jobs under the joblib launcher (joblib's
    negative counts: -1 = all cores, -2 = all but one ...), else 1."""
    from hydra.core.hydra_config import HydraConfig

    from ptq.env import available_cores

    try:
        launcher = HydraConfig.get().launcher
    except Exception:  # noqa: BLE001 - outside a Hydra job
        return 1
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = launcher.get("n_jobs") or 1
    return max(1, available_cores() + 1 + n_jobs if n_jobs < 0 else n_jobs)


def default_threads() -> int:
    """Torch threads of one job: the cores available to the process divided by the jobs running at once
    (oversubscribed threads wait on each other at every small operation)."""
    from ptq.env import available_cores

    return max(1, available_cores() // parallel_jobs())


def apply_threads(cfg: DictConfig) -> None:
    """`threads=N`: N torch (and OpenMP/MKL, for child processes) threads in this job; null: `default_threads()`."""
    n = cfg.get("threads")
    if n is None:
        n = default_threads()
    elif not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise PTQError(f"threads={n} is impossible; valid: null or an integer >= 1")
    import torch

    torch.set_num_threads(n)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def _after_failure(out: Path | None) -> str:
    """Remove what the failed single run created (never a folder that existed before it); returns a note on
    where its log is when the run folder is kept."""
    if out is None or remove_created(out) is not None:
        return ""
    log_file = out / "run.log"
    return f" (run folder {out} existed before and is kept; log: {log_file})" if log_file.exists() else ""


def run_job(cfg: DictConfig) -> float | None:
    """Run one job. Single run: a one-line error and exit 2 on bad input, and the run folder removed. Multirun:
    the failure is recorded as `status: failed` in results.json and the sweep goes on."""
    from ptq.app import check_config, run, summary_table
    from ptq.sweep import record_failure, run_with_resume

    out = _output_dir()
    multirun = _is_multirun()
    error: Exception | None = None
    with job_lock(out):  # two sweeps into one folder: the second waits, then finds the results
        try:
            check_config(cfg)  # bad input is rejected before any earlier result is looked at
            apply_threads(cfg)
            results = run_with_resume(run, cfg, out, reuse_siblings=multirun)
        except Exception as e:  # noqa: BLE001 - every failure ends in a record (sweep) or one line (single run)
            error = e
            if multirun:
                try:
                    record_failure(cfg, out, e)
                except OSError as lost:   # e.g. the disk is full: the sweep goes on, its summary counts the job
                    log.error("job %s failed and its failure record cannot be written: %s", out, lost)
    if multirun:
        record_outcome(out, error)
        if error is not None:
            log.error("job failed: %s", error)
            return None
    elif error is not None:
        where = _after_failure(out)
        if isinstance(error, PTQError):
            fail(f"{error}{where}")
        if isinstance(error, WriteError):   # disk full, read-only: the file named, no traceback (not a bug)
            fail(f"{error}{where}", code=EXIT_UNEXPECTED)
        traceback.print_exception(error)
        fail(f"{type(error).__name__}: {error}{where}", code=EXIT_UNEXPECTED)
    print(summary_table(results))
    if out is not None:
        print(f"  results      {out / 'results.json'}")
    return results.get("top1")
