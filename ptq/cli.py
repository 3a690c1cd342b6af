"""What run.py does around `ptq.app.run`: one-line errors, failure records in sweeps, no half-written results."""
from __future__ import annotations

import logging
import re
import shutil
import sys
import traceback
from pathlib import Path

from omegaconf import DictConfig

from ptq.errors import PTQError

log = logging.getLogger("ptq")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "data", "quantizer", "metric", "bits", "calib", "logger", "experiment")


def fail(message: str, code: int = 2) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_argv(argv: list[str]) -> None:
    """Reject an unknown config-group option (e.g. `model=foo`) in one line before Hydra prints its traceback."""
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
                fail(f"unknown {group} '{option}'; valid: {', '.join(group_options(group))}")


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


def run_job(cfg: DictConfig) -> float | None:
    """Run one job. Single run: a one-line error and exit 2 on bad input, and the run folder removed. Multirun:
    the failure is recorded as `status: failed` in results.json and the sweep goes on."""
    from ptq.app import run, summary_table
    from ptq.sweep import run_with_resume

    out = _output_dir()
    multirun = _is_multirun()
    try:
        results = run_with_resume(run, cfg, out)
    except Exception as e:  # noqa: BLE001 - every failure ends in a record (sweep) or one line (single run)
        if multirun:
            from ptq.sweep import record_failure

            record_failure(cfg, out, e)
            log.error("job failed: %s", e)
            return None
        if out is not None and out.is_dir() and not (out / "results.json").exists():
            logging.shutdown()
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(e, PTQError):
            fail(str(e))
        traceback.print_exc()
        fail(f"{type(e).__name__}: {e}", code=1)
    print(summary_table(results))
    if out is not None:
        print(f"  results      {out / 'results.json'}")
    return results.get("top1")
