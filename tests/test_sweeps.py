"""Experiment grids and launchers compose; resume and reuse of equivalent jobs (ptq/sweep.py) in-process."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ptq.cli import apply_threads, compose_config
from ptq.errors import PTQError
from ptq.quant.config import resolve_ptq_config
from ptq.results_file import RESULTS_SCHEMA_VERSION
from ptq.sweep import effective_config, run_with_resume

CONF = Path(__file__).resolve().parents[1] / "conf"
# Experiment -> (swept keys, number of jobs on one model).
GRIDS = {
    "table1": ({"model", "quantizer", "bits"}, 6),
    "ablation": ({"model", "quantizer", "metric", "quantizer.slots.softmax.enabled",
                  "quantizer.slots.gelu.enabled", "bits"}, 16),
    "metrics": ({"model", "quantizer", "metric", "metric.grad", "bits"}, 50),
    "calib_size": ({"model", "quantizer", "bits", "calib.n_images"}, 8),
    "seeds": ({"model", "quantizer", "bits", "calib.seed"}, 20),
    "compat": ({"model", "quantizer", "quantizer.compat", "bits"}, 8),
    "outliers": ({"model", "model/outliers", "quantizer", "bits", "calib.seed"}, 72),
    "methods": ({"model", "calib.seed", "bits", "quantizer"}, 36),
    "components": ({"model", "bits", "quantizer", "quantizer.slots.softmax.quantizer",
                    "quantizer.slots.weight.granularity"}, 12),
    "components_adalog": ({"model", "bits", "quantizer", "quantizer.slots.softmax.quantizer"}, 4),
    "recon": ({"model", "quantizer", "recon", "bits", "calib.seed"}, 36),
    "compensation": ({"model", "quantizer", "compensate", "bits", "calib.seed"}, 144),
    "recon_losses": ({"model", "quantizer", "recon.loss", "bits", "calib.seed"}, 96),
}
# Job folder names: the overrides, and for the outlier grid its profile (a group override would put a slash in).
SUBDIRS = {"outliers": "${short_dirname:'${hydra.job.override_dirname},outliers=${model.outliers.profile}'}"}


def sweep_values(params: dict) -> dict[str, list[str]]:
    """The values of every swept key, as Hydra's basic sweeper expands them (lists, range(...))."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return {o.key_or_group: list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            for o in parsed}


def test_every_experiment_file_is_listed():
    assert sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")) == sorted(GRIDS)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_experiment_composes(name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    # launchers are chosen on the command line (an override_dirname exclude list may name their n_jobs key)
    assert "launcher" not in text.replace("# ", "").replace("hydra.launcher.n_jobs", "")
    cfg = compose_config([f"experiment={name}"], hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweep.dir == f"multirun/{name}"  # fixed: the same command resumes into the same folder
    assert (OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"]
            == SUBDIRS.get(name, "${short_dirname:${hydra.job.override_dirname}}"))
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")
    values = sweep_values(OmegaConf.to_container(cfg.hydra.sweeper.params))
    keys, n_jobs = GRIDS[name]
    assert set(values) == keys and values["model"] == ["fmnist_vit"]
    assert len(list(itertools.product(*values.values()))) == n_jobs
    # Every value of every key composes into a valid method: jobs taking the i-th value of each key (cyclically;
    # long numeric ranges by their ends) cover them all.
    lists = {k: (v if len(v) <= 5 else [v[0], v[-1]]) for k, v in values.items()}
    for i in range(max(map(len, lists.values()))):
        job = [f"{k}={v[i % len(v)]}" for k, v in lists.items()]
        pcfg = resolve_ptq_config(compose_config([f"experiment={name}", *job]))
        assert pcfg.name == lists["quantizer"][i % len(lists["quantizer"])]


def test_ablation_switches_reach_the_method():
    base = ["experiment=ablation", "quantizer=ptq4vit"]
    off = resolve_ptq_config(compose_config(base + ["metric=cosine", "quantizer.slots.softmax.enabled=false",
                                                    "quantizer.slots.gelu.enabled=false"]))
    on = resolve_ptq_config(compose_config(base + ["metric=hessian"]))
    assert (off.metric, off.slots["softmax"].quantizer, off.slots["gelu"].quantizer) == ("cosine", "uniform", "uniform")
    assert (on.metric, on.slots["softmax"].quantizer, on.slots["gelu"].quantizer) == (
        "hessian", "twin_softmax", "twin_gelu")
    assert (off.search.alpha, off.search.rounds) == (0.01, 3)  # still the PTQ4ViT preset


def test_launchers_compose():
    joblib = compose_config(["experiment=table1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                            hydra_config=True)
    assert joblib.hydra.launcher._target_.endswith("JoblibLauncher") and joblib.hydra.launcher.n_jobs == 2
    slurm = compose_config(["experiment=table1", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                           hydra_config=True)
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 1, 1)
    assert launcher.submitit_folder == "multirun/table1/.submitit/%j"
    assert compose_config(["hydra/launcher=submitit_slurm"], hydra_config=True).hydra.launcher.gpus_per_node is None


def test_threads(monkeypatch):
    import torch

    from ptq.cli import default_threads

    before = torch.get_num_threads()   # what earlier tests left (some pin one thread)
    assert compose_config([]).threads is None
    apply_threads(OmegaConf.create({"threads": None}))
    assert torch.get_num_threads() == default_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))
    try:
        apply_threads(OmegaConf.create({"threads": 1}))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(PTQError, match="threads=0"):
        apply_threads(OmegaConf.create({"threads": 0}))


def job_config(**overrides) -> dict:
    cfg = {"model": {"name": "fmnist_vit"}, "quantizer": {"name": "ptq4vit", "enabled": True},
           "metric": {"name": "hessian", "grad": "kl_self", "fisher_draws": 4}, "bits": {"w": 6, "a": 6},
           "calib": {"n_images": 32, "seed": 3}, "seed": 0, "force": False, "progress": False, "threads": None}
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def test_effective_config_drops_unused_settings():
    fp32 = job_config(quantizer__name="fp32", quantizer__enabled=False)
    assert effective_config(fp32) == effective_config(job_config(quantizer__name="fp32", quantizer__enabled=False,
                                                                 bits__w=8, calib__seed=1, metric__name="mse"))
    assert effective_config(fp32) != effective_config(job_config(quantizer__name="fp32", quantizer__enabled=False,
                                                                 seed=1))
    mse = job_config(metric__name="mse")
    assert effective_config(mse) == effective_config(job_config(metric__name="mse", metric__grad="fisher",
                                                                metric__fisher_draws=8))
    assert effective_config(mse) != effective_config(job_config(metric__name="mse", bits__w=4))
    assert effective_config(job_config()) != effective_config(job_config(metric__grad="fisher"))
    assert effective_config(job_config()) == effective_config(job_config(metric__fisher_draws=8))
    assert effective_config(job_config(metric__grad="fisher")) != effective_config(
        job_config(metric__grad="fisher", metric__fisher_draws=8))
    assert effective_config(job_config()) == effective_config(job_config(progress=True, threads=2))
    # a recipe without the search stage (RepQ-ViT) reads no metric setting
    repq = job_config(quantizer__name="repq_vit", quantizer__recipe=["init_quantized_pass", "reparam_layernorm"])
    assert effective_config(repq) == effective_config(job_config(
        quantizer__name="repq_vit", quantizer__recipe=["init_quantized_pass", "reparam_layernorm"],
        metric__name="mse", metric__grad="kl_self"))
    assert effective_config(repq) != effective_config(job_config(
        quantizer__name="repq_vit", quantizer__recipe=["init_quantized_pass", "reparam_layernorm"], bits__w=4))


def test_resume_and_reuse_in_process(tmp_path):
    """The same job is skipped; a sibling differing only in unused settings copies the results; force re-runs."""
    calls = []

    def fake_run(cfg, out):
        calls.append(out.name)
        results = {"status": "ok", "schema_version": RESULTS_SCHEMA_VERSION, "model": "fmnist_vit",
                   "quantizer": "ptq4vit", "top1": 50.0 + len(calls),
                   "top1_fp32": 80.0, "params_file": "quant_params.safetensors",
                   "config": OmegaConf.to_container(cfg, resolve=True)}
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results))
        return results

    sweep = tmp_path / "sweep"
    a = OmegaConf.create(job_config(metric__name="cosine", metric__grad="kl_self"))
    b = OmegaConf.create(job_config(metric__name="cosine", metric__grad="fisher"))
    assert run_with_resume(fake_run, a, sweep / "a", reuse_siblings=True)["top1"] == 51.0
    assert run_with_resume(fake_run, a, sweep / "a", reuse_siblings=True)["top1"] == 51.0  # resumed
    copied = run_with_resume(fake_run, b, sweep / "b", reuse_siblings=True)
    assert calls == ["a"] and copied["top1"] == 51.0 and copied["duplicate_of"] == "a"
    on_disk = json.loads((sweep / "b" / "results.json").read_text())
    assert on_disk["config"]["metric"]["grad"] == "fisher" and "params_file" not in on_disk
    assert run_with_resume(fake_run, b, sweep / "b", reuse_siblings=True)["duplicate_of"] == "a"  # resumed copy
    assert run_with_resume(fake_run, b, tmp_path / "single" / "b")["top1"] == 52.0  # single runs never reuse
    b.force = True
    assert run_with_resume(fake_run, b, sweep / "b", reuse_siblings=True)["top1"] == 53.0
    assert calls == ["a", "b", "b"]
    (sweep / "c").mkdir()  # a failed sibling is never reused
    (sweep / "c" / "results.json").write_text(json.dumps({"status": "failed", "config": job_config(seed=5)}))
    assert run_with_resume(fake_run, OmegaConf.create(job_config(seed=5)), sweep / "d", reuse_siblings=True)[
        "top1"] == 54.0
