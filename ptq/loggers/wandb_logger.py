"""Weights & Biases logger: one W&B run per finished job, written into the job's own run folder.

Mode from `logger.mode` (default: env WANDB_MODE, else offline); offline runs land in `<run>/wandb/offline-run-*`
and are uploaded later with `wandb sync <run>/wandb/offline-run-*`. Logging never fails a finished job: any problem
is reported as a warning, results.json is already written. `log_to_wandb` returns the record's state, which
results.json keeps (`wandb.state` done / failed). Online mode checks first that the server answers
(`WANDB_BASE_URL`, a TCP connect of a few seconds) and otherwise logs an offline run, uploadable later.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig

log = logging.getLogger("ptq")

MODES = ("online", "offline", "disabled", "shared")
SUMMARY_KEYS = ("status", "top1", "top5", "top1_fp32", "top5_fp32", "agreement", "kl_fp32", "drop", "calib_seconds",
                "eval_seconds", "peak_memory_mb", "calib_peak_memory_mb", "num_test", "calib_images")


def _hydra():
    """Hydra's runtime config of the current job, or None outside a Hydra job (tests, notebooks)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get()
    except Exception:
        return None


def run_group(cfg: DictConfig) -> str | None:
    """`logger.group` if set, else the sweep folder name in a multirun, else none."""
    if cfg.logger.get("group"):
        return str(cfg.logger.group)
    hc = _hydra()
    if hc is not None:
        from hydra.types import RunMode

        if hc.mode == RunMode.MULTIRUN:
            return Path(str(hc.sweep.dir)).name
    return None


def _bits(cfg: DictConfig, results: dict) -> str | None:
    """'w6a6' for a quantized run, None for a float one."""
    if not (results.get("ptq_config") or {}).get("enabled", cfg.quantizer.get("enabled", True)):
        return None
    return f"w{results.get('bits_w', cfg.bits.w)}a{results.get('bits_a', cfg.bits.a)}"


def run_name(cfg: DictConfig, results: dict) -> str:
    """The job's command-line overrides (Hydra's override_dirname), else model / method / bits."""
    hc = _hydra()
    name = str(hc.job.override_dirname) if hc is not None else ""
    if name:
        return name
    parts = (results.get("model", cfg.model.name), results.get("quantizer", cfg.quantizer.name), _bits(cfg, results))
    return "_".join(str(p) for p in parts if p)


def run_tags(cfg: DictConfig, results: dict) -> list[str]:
    """model, bits (w6a6), quantizer, metric (no bits or metric for a float run), then the configured logger.tags;
    W&B caps a tag at 64 characters."""
    bits = _bits(cfg, results)
    tags = [results.get("model", cfg.model.name), bits, results.get("quantizer", cfg.quantizer.name),
            results.get("metric", cfg.metric.name) if bits else None]
    tags += [str(t) for t in (cfg.logger.get("tags") or [])]
    return list(dict.fromkeys(str(t)[:64] for t in tags if t))


DEFAULT_BASE_URL = "https://api.wandb.ai"
CONNECT_TIMEOUT_S = 5.0


def server_reachable(base_url: str | None = None, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether the W&B server (WANDB_BASE_URL) accepts a TCP connection within `timeout` seconds."""
    url = urlparse(base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _artifact_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:120] or "run"


def _init(wandb, cfg: DictConfig, results: dict, out: Path | None, mode: str):
    config = dict(results.get("config") or {})
    config["ptq_config"] = results.get("ptq_config")
    config["env"] = results.get("env")
    return wandb.init(
        project=cfg.logger.get("project") or "ptq-vit", entity=cfg.logger.get("entity") or None,
        dir=str(out) if out is not None else None, mode=mode, group=run_group(cfg),
        name=run_name(cfg, results), tags=run_tags(cfg, results), config=config, job_type="ptq",
        reinit="finish_previous",
        settings=wandb.Settings(console="off", x_disable_stats=True, silent=True, init_timeout=60))


def _init_with_fallback(wandb, cfg: DictConfig, results: dict, out: Path | None, mode: str) -> tuple[object, str]:
    """wandb.init in `mode`; an online run whose server cannot be reached becomes an offline run."""
    if mode == "online" and not server_reachable():
        log.warning("W&B server %s cannot be reached: logging an offline run instead (upload later with wandb sync)",
                    os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
        return _init(wandb, cfg, results, out, "offline"), "offline"
    try:
        return _init(wandb, cfg, results, out, mode), mode
    except Exception as e:  # noqa: BLE001 - e.g. no API key, server error: keep the metrics in an offline run
        if mode != "online":
            raise
        log.warning("W&B online run failed (%s: %s): logging an offline run instead", type(e).__name__,
                    " ".join(str(e).split())[:200])
        return _init(wandb, cfg, results, out, "offline"), "offline"


CALIBRATION_COLUMNS = ("layer", "operand", "quantizer", "param", "score", "candidates", "seconds")


def calibration_table(wandb, records: list[dict]):
    """The per-layer calibration record (CalibReport.records: layer, operand, quantizer, chosen parameter, score,
    candidates, the layer's search seconds) as a W&B Table; a parameter of many groups is its min/mean/max."""
    rows = [[json.dumps(r.get(c)) if c == "param" else r.get(c) for c in CALIBRATION_COLUMNS] for r in records]
    return wandb.Table(columns=list(CALIBRATION_COLUMNS), data=rows)


# Columns of the compensation table, in order; a table has those its rows hold: QwT / QwT-v2 per block (R^2, kept,
# parameters added, seconds), ERQ per layer (output MSE before / after, rounding flips; it adds no parameters).
COMPENSATION_COLUMNS = ("block", "layer", "r2", "kept", "params", "out_mse_before", "out_mse_after", "flips",
                        "seconds")


def compensation_table(wandb, compensation: dict):
    """The compensation stage's per-block record (results.json `compensation.blocks`: R^2, kept, parameters added,
    seconds; ERQ: `compensation.layers`, every edited layer kept, 0 parameters added) as a W&B Table, or None when
    it recorded no block or layer."""
    rows = compensation.get("blocks") or [{**r, "kept": True, "params": 0} for r in compensation.get("layers") or []]
    if not rows:
        return None
    columns = [c for c in COMPENSATION_COLUMNS if any(c in r for r in rows)]
    return wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])


def log_to_wandb(cfg: DictConfig, results: dict, out: Path | None) -> dict:
    """Record one finished job as its own W&B run (config, tags, summary metrics, the calibration and compensation
    tables, calibrated parameters); returns the record's state for results.json: {"state": done | failed |
    disabled, "mode", "run_dir"?, "error"?}."""
    mode = str(cfg.logger.get("mode") or "offline")
    try:
        if mode not in MODES:
            log.warning("W&B not logged: logger.mode=%s is unknown; valid: %s", mode, ", ".join(MODES))
            return {"state": "failed", "mode": mode, "error": "unknown logger.mode"}
        if mode == "disabled":
            log.debug("W&B disabled (logger.mode=disabled)")
            return {"state": "disabled", "mode": mode}
        import wandb
    except Exception as e:  # noqa: BLE001 - logging never fails a finished job
        log.warning("W&B not logged: %s: %s", type(e).__name__, e)
        return {"state": "failed", "mode": mode, "error": f"{type(e).__name__}: {e}"[:300]}
    run, state = None, {"state": "failed", "mode": mode}
    try:
        run, state["mode"] = _init_with_fallback(wandb, cfg, results, out, mode)
        run.summary.update({k: results[k] for k in SUMMARY_KEYS if k in results})
        records = (results.get("calibration") or {}).get("records")
        if records:
            run.log({"calibration": calibration_table(wandb, records)})
        compensation = compensation_table(wandb, results.get("compensation") or {})
        if compensation is not None:
            run.log({"compensation": compensation})
        params = results.get("params_file")
        if params and out is not None and cfg.logger.get("log_params", True) and (Path(out) / params).is_file():
            art = wandb.Artifact(_artifact_name(f"quant-params-{run.name}"), type="quant-params",
                                 metadata={k: results[k] for k in ("model", "quantizer", "bits_w", "bits_a", "top1")
                                           if k in results})
            art.add_file(str(Path(out) / params), name=Path(params).name)
            run.log_artifact(art)
        if state["mode"] == "offline" and out is not None:
            log.info("W&B offline run in %s (upload: wandb sync %s/wandb/offline-run-*)", out, out)
        run_dir = getattr(getattr(run, "settings", None), "sync_dir", None)
        if run_dir and out is not None:
            try:
                state["run_dir"] = str(Path(run_dir).resolve().relative_to(Path(out).resolve()))
            except ValueError:
                state["run_dir"] = str(run_dir)
        run.finish()
        state["state"] = "done"
    except Exception as e:  # noqa: BLE001
        log.warning("W&B logging failed (results.json is unaffected): %s: %s", type(e).__name__,
                    " ".join(str(e).split())[:300])
        state["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        if run is not None:
            try:
                run.finish()
            except Exception as e2:  # noqa: BLE001
                log.warning("W&B run did not finish cleanly: %s: %s", type(e2).__name__, e2)
    return state
