"""The lab's main job as a pure function of the config: build, (calibrate,) evaluate, record.

`run.py` is a thin Hydra shim around `run(cfg, output_dir)`; tests call it in-process.
"""
from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import ptq.plugins  # noqa: F401  (registers the stages that plug into every recipe: reconstruction)
from ptq.data import build_data
from ptq.env import environment, resolve_device
from ptq.errors import PTQError
from ptq.evaluate import agreement, evaluate_logits, kl_to_reference, top1, topk
from ptq.models import build_model
from ptq.results_file import PARAMS_FILE, RESULTS_FILE, RESULTS_SCHEMA_VERSION, write_results
from ptq.validation import validate_config

log = logging.getLogger("ptq")



def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolved_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def _reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window: CUDA allocator peak, or the process's RSS high-water mark (Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or peak resident host memory (VmHWM) since the last reset."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


_FP32_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}


def _fp32_key(cfg: DictConfig, device: torch.device) -> str:
    sub = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data")}
    return json.dumps([sub, cfg.calib.n_images, cfg.calib.seed, str(device)], sort_keys=True, default=str)


def float_logits(model, data, cfg: DictConfig, device: torch.device, progress: bool):
    """Float logits over the test set, cached in-process (sweeps in one process evaluate the float model once)."""
    key = _fp32_key(cfg, device)
    if key not in _FP32_CACHE:
        t0 = time.time()
        logits, labels = evaluate_logits(model, data.test_batches(int(cfg.eval.batch_size)), device, progress,
                                         data.num_test, "eval fp32")
        _FP32_CACHE.clear()  # keep one entry: ImageNet logits are 200 MB
        _FP32_CACHE[key] = (logits, labels, time.time() - t0)
    return _FP32_CACHE[key]


def check_config(cfg: DictConfig):
    """Every check that needs no model or data, before any work (and before a sweep looks at earlier results):
    types, ranges and cross-field rules (ptq/validation.py), the method (quantizer / metric / bits), the logger.
    Returns the resolved quantization config."""
    from ptq.loggers import logger_name
    from ptq.quant.config import resolve_ptq_config

    validate_config(cfg)
    pcfg = resolve_ptq_config(cfg)
    if not pcfg.enabled and pcfg.mlp_recon.name != "none":
        raise PTQError(f"mlp_recon.name={pcfg.mlp_recon.name} changes the float model before calibration, but "
                       f"quantizer={pcfg.name} calibrates nothing; valid: a quantization method, or mlp_recon=none")
    logger_name(cfg)
    return pcfg


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Evaluate the configured model (float, or quantized by the configured method) and return the results.

    Writes `results.json` (and the calibrated parameters) into `output_dir` when given. Raises PTQError on bad
    input before anything is written.
    """
    out = Path(output_dir) if output_dir is not None else None
    pcfg = check_config(cfg)
    device = resolve_device(cfg.get("device", "auto"))
    seed_everything(int(cfg.seed))
    progress = bool(cfg.get("progress", True))
    bs = int(cfg.eval.batch_size)

    model = build_model(cfg.model, device)
    data = build_data(cfg, model)
    log.info("model %s (%.2fM params) on %s; %d calibration images, %d test images", cfg.model.name,
             sum(p.numel() for p in model.parameters()) / 1e6, device, len(data.calib_images), data.num_test)

    fp_logits, labels, fp_seconds = float_logits(model, data, cfg, device, progress)
    results: dict = {"status": "ok", "schema_version": RESULTS_SCHEMA_VERSION, "model": cfg.model.name,
                     "quantizer": pcfg.name, "bits_w": pcfg.w_bits, "bits_a": pcfg.a_bits, "metric": pcfg.metric,
                     "grad": pcfg.grad, "compat": pcfg.compat,
                     "top1_fp32": top1(fp_logits, labels), "top5_fp32": topk(fp_logits, labels, 5),
                     "num_test": int(labels.numel()), "calib_images": len(data.calib_images)}
    calib_seconds, eval_seconds, logits = 0.0, fp_seconds, fp_logits
    if pcfg.enabled:
        from ptq.quant import quantize_model

        _reset_peak_memory(device)
        t0 = time.time()
        recon_data = (data.recon_images, data.recon_labels) if data.recon_images is not None else None
        comp_data = (data.comp_images, data.comp_labels) if data.comp_images is not None else None
        report = quantize_model(model, pcfg, data.calib_images, data.calib_labels, device=device, progress=progress,
                                recon_data=recon_data, comp_data=comp_data)
        calib_seconds = time.time() - t0
        results["calib_peak_memory_mb"] = round(_peak_memory_mb(device), 1)
        results["calibration"] = report.summary()
        from ptq.export import deployability  # integer operators or simulation only (python -m ptq.export)

        results["deployability"] = deployability(model)
        if report.reconstruction:   # iterations and time of the `reconstruct` stage, per unit (ptq/recon/)
            results["reconstruction"] = report.reconstruction
        if report.compensation:     # per block R^2, kept, parameters, seconds; added params / MACs (ptq/compensate/)
            results["compensation"] = report.compensation
        log.info("calibrated in %.1fs", calib_seconds)
        t0 = time.time()
        logits, _ = evaluate_logits(model, data.test_batches(bs), device, progress, data.num_test,
                                    f"eval {pcfg.name} W{pcfg.w_bits}A{pcfg.a_bits}")
        eval_seconds = time.time() - t0
        if pcfg.mlp_recon.name != "none":   # MLP reconstruction changed the float model (ptq/recon/mlp.py)
            results["mlp_reconstruction"] = mlp_float_change(cfg, model, data, device, progress, report, fp_logits,
                                                             logits, labels)
        if out is not None:
            from ptq.export.float_weights import WEIGHTS_FILE, save_model_weights
            from ptq.quant import save_quant_params
            from ptq.quant.stage import TRANSFORMING_STAGES

            out.mkdir(parents=True, exist_ok=True)
            save_quant_params(model, out / PARAMS_FILE, {"config": json.dumps(resolved_config(cfg), default=str)})
            results["params_file"] = PARAMS_FILE
            if set(pcfg.recipe) & TRANSFORMING_STAGES and results["deployability"]["deployable"]:
                # the changed weights the parameters fit, for python -m ptq.export (only a deployable run exports)
                results["weights_file"] = save_model_weights(model, out / WEIGHTS_FILE).name
    results.update({
        "top1": top1(logits, labels), "top5": topk(logits, labels, 5),
        "agreement": agreement(logits, fp_logits), "kl_fp32": kl_to_reference(logits, fp_logits),
        "calib_seconds": round(calib_seconds, 3), "eval_seconds": round(eval_seconds, 3),
        "peak_memory_mb": round(_peak_memory_mb(device), 1),  # since calibration started (whole run for fp32)
        "ptq_config": pcfg.to_dict(), "config": resolved_config(cfg), "env": environment(device),
        "data": data.info,
    })
    results["drop"] = results["top1_fp32"] - results["top1"]
    from ptq.loggers import mark_pending

    mark_pending(cfg, results)  # W&B logging is a step of its own: a kill during it is redone on resume
    if out is not None:
        write_results(out, results)
    log_and_record(cfg, results, out)
    return results


def mlp_float_change(cfg: DictConfig, model, data, device: torch.device, progress: bool, report, fp_logits,
                     logits, labels) -> dict:
    """MLP reconstruction's record: its stage rows, the original and the modified float model's top-1, KL and
    agreement between them, and the quantized model's KL to the modified float model."""
    from ptq.recon.mlp_state import modified_float

    t0 = time.time()
    float_model = modified_float(model, build_model(cfg.model, device))
    m_logits, _ = evaluate_logits(float_model, data.test_batches(int(cfg.eval.batch_size)), device, progress,
                                  data.num_test, "eval fp32 (MLP reconstructed)")
    return {**report.mlp_reconstruction, "top1_fp32": top1(fp_logits, labels), "top1_fp32_mlp": top1(m_logits, labels),
            "kl_fp32_mlp": kl_to_reference(m_logits, fp_logits), "agreement_fp32_mlp": agreement(m_logits, fp_logits),
            "kl_q_to_fp32_mlp": kl_to_reference(logits, m_logits), "eval_seconds": round(time.time() - t0, 3)}


def log_and_record(cfg: DictConfig, results: dict, out: Path | None) -> None:
    """Send a finished job to the configured logger and record what it did (the W&B state) in `results` and, when
    the job has a folder with its results.json, in that file."""
    from ptq.loggers import log_run

    record = log_run(cfg, results, out)
    if record is None:
        return
    results["wandb"] = record
    if out is not None and (Path(out) / RESULTS_FILE).is_file():
        write_results(out, results)


def summary_table(results: dict) -> str:
    """A short human-readable table of a run's main numbers."""
    rows = [("model", results["model"]), ("method", f"{results['quantizer']} W{results['bits_w']}A{results['bits_a']}"
                                                   if results["quantizer"] != "fp32" else "fp32"),
            ("top-1 / fp32", f"{results['top1']:.2f} / {results['top1_fp32']:.2f}  (drop {results['drop']:.2f})"),
            ("agreement", f"{results['agreement']:.2f} %"), ("KL(fp32||q)", f"{results['kl_fp32']:.5f}"),
            ("calib / eval", f"{results['calib_seconds']:.1f} s / {results['eval_seconds']:.1f} s")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
