"""Synthetic results.json files for the report and notebook tests (shaped like ptq.app.run's output)."""
from __future__ import annotations

import json
from pathlib import Path

PRESET_METRIC = {"fp32": "hessian", "base_ptq": "cosine", "ptq4vit": "hessian"}


def write_job(folder: Path, model: str, quantizer: str, bits: int, top1: float | None, fp32: float = 90.0, *,
              metric: str | None = None, grad: str | None = None, seed: int = 3, n_images: int = 32,
              twin_softmax: bool | None = None, twin_gelu: bool | None = None, compat: str = "paper",
              max_test: int = 100, status: str = "ok", duplicate_of: str | None = None) -> Path:
    """A results.json shaped like ptq.app.run's (or ptq.sweep.record_failure's for status failed)."""
    enabled = quantizer != "fp32"
    metric = metric or PRESET_METRIC[quantizer]
    twins = {}
    if enabled:
        on = quantizer == "ptq4vit"
        twins = {"twin_softmax": on if twin_softmax is None else twin_softmax,
                 "twin_gelu": on if twin_gelu is None else twin_gelu}
    config = {"model": {"name": model, "checkpoint": None}, "data": {"name": "fmnist", "max_test": max_test},
              "quantizer": {"name": quantizer, "enabled": enabled, "compat": compat, **twins},
              "metric": {"name": metric, "grad": grad}, "bits": {"w": bits, "a": bits},
              "calib": {"n_images": n_images, "seed": seed}, "seed": 0, "logger": {"name": "none"}}
    data = {"status": status, "config": config}
    if status == "ok":
        data.update(model=model, quantizer=quantizer, bits_w=bits, bits_a=bits, metric=metric,
                    grad=grad or ("pseudo_ce" if compat == "paper" else "kl_self"), compat=compat, top1=top1,
                    top1_fp32=fp32, drop=fp32 - top1)
    else:
        data["error"] = "PTQError: checkpoint /nope.safetensors does not exist"
    if duplicate_of:
        data["duplicate_of"] = duplicate_of
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(data))
    return folder
