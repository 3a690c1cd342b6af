"""Synthetic results.json files for the report and notebook tests (shaped like ptq.app.run's output)."""
from __future__ import annotations

import functools
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
                    top1_fp32=fp32, drop=fp32 - top1, num_test=max_test)
    else:
        data["error"] = "PTQError: checkpoint /nope.safetensors does not exist"
    if duplicate_of:
        data["duplicate_of"] = duplicate_of
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(data))
    return folder


def write_compensated_job(folder: Path, name: str, seed: int, top1: float, record: dict | None = None, *,
                          quantizer: str = "repq_vit", bits: int = 4, agreement: float | None = None,
                          kl: float | None = None, **settings) -> Path:
    """A job with `compensate=<name>` (and its other compensate settings) and, if given, its results.json
    `compensation` record (ptq/compensate/); `agreement` / `kl`: its agreement and KL to float."""
    folder = write_job(folder, "fmnist_vit", quantizer, bits, top1, metric="hessian", seed=seed)
    data = json.loads((folder / "results.json").read_text())
    data["config"]["compensate"] = {"name": name, **settings}
    data.update({k: v for k, v in (("compensation", record), ("agreement", agreement), ("kl_fp32", kl))
                 if v is not None})
    (folder / "results.json").write_text(json.dumps(data))
    return folder


def qwt_record(compat: str, kept: bool, seconds: float) -> dict:
    """results.json `compensation` of a one-block QwT run (paper or official form), its map kept or dropped."""
    params = 9312 if kept else 0
    return {"name": "qwt", "compat": compat, "images": 512, "augmentation": "none" if compat == "paper" else "train",
            "ridge": 0.001 if compat == "paper" else 0.0, "solver": "solve64" if compat == "paper" else "inverse32",
            "precision": "fp16", "kept": int(kept), "added_params": params, "added_macs_per_image": 50 * params,
            "seconds": seconds, "blocks": [{"block": "blocks.0", "r2": 0.2 if kept else -0.4, "kept": kept,
                                            "params": params, "seconds": seconds}]}


def _set_dotted(config: dict, key: str, value) -> None:
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _number(row: dict, name: str, cast=float):
    """A number of a runs.csv row (written by pandas: `6.0` where the column has blanks), None where blank."""
    return cast(float(row[name])) if row[name] not in ("", None) else None


def jobs_from_runs_csv(runs_csv: Path, sweep: Path) -> list[Path]:
    """Rebuild every job of a committed `experiments/<name>/runs.csv` as `<sweep>/<job>/results.json`: the numbers
    from its row, the resolved config composed (conf/ as it is now) from the job folder's name, which is the
    job's overrides (`bits=w6a6,calib.n_images=128,model=fmnist_vit,quantizer=ptq4vit`)."""
    import csv

    import yaml
    from omegaconf import OmegaConf

    from ptq.cli import compose_config

    composed: dict[tuple, dict] = {}
    folders = []
    with open(runs_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        overrides = row["path"].split(",")
        groups = tuple(o for o in overrides if "." not in o.split("=", 1)[0])
        if groups not in composed:
            composed[groups] = OmegaConf.to_container(compose_config(list(groups)), resolve=True)
        config = json.loads(json.dumps(composed[groups]))
        for o in overrides:
            key, value = o.split("=", 1)
            if "." in key:
                _set_dotted(config, key, yaml.safe_load(value))
        num = functools.partial(_number, row)
        # the runs.csv model is the report's label (`fmnist_vit+severe`); results.json holds the model's name
        data = {"status": row["status"], "model": row["model"].partition("+")[0], "quantizer": row["quantizer"],
                "bits_w": num("w", int), "bits_a": num("a", int), "metric": row["metric"] or None,
                "grad": row["grad"] or None, "compat": row["compat"] or None, "top1": num("top1"),
                "top1_fp32": num("top1_fp32"), "drop": num("drop"), "top5": num("top5"),
                "agreement": num("agreement"), "kl_fp32": num("kl_fp32"), "calib_seconds": num("calib_seconds"),
                "num_test": num("num_test", int), "config": config}
        for name in ("duplicate_of", "error"):
            if row[name]:
                data[name] = row[name]
        folder = sweep / row["path"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps(data))
        folders.append(folder)
    return folders
