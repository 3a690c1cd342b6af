"""A job's identity for resume and sibling reuse (ptq/job_identity.py): the resolved config restricted to what its
stages, slots and evaluation declare they read. A key read changes the identity (the job runs), a key nobody reads
does not; the declared reads cover what the stages actually read; the AdaLog metric sweep runs two jobs (issue 26).
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ptq.cli import compose_config
from ptq.job_identity import _in_schema, job_identity, job_reads
from ptq.quant.method import PTQConfig
from ptq.quant.stage import SPECS
from ptq.report import _flatten

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "quantizer").glob("*.yaml"))
# each method preset, with and without reconstruction, and with a metric other than its own (Hessian <-> not)
CASES = [(q, r, m) for q in PRESETS for r in ("none", "brecq") for m in (None, "hessian", "mse")]


def job(*overrides: str) -> dict:
    return OmegaConf.to_container(compose_config(["logger=none", *overrides]), resolve=True, throw_on_missing=False)


def case_config(quantizer: str, recon: str, metric: str | None) -> dict:
    return job(f"quantizer={quantizer}", f"recon={recon}", *([f"metric={metric}"] if metric else []))


def perturbed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return [*value, "x"]
    if isinstance(value, dict):
        return {**value, "x": 1}
    return "x"   # None


def with_value(config: dict, key: str, value) -> dict:
    out = copy.deepcopy(config)
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return out


def covered(key: str, reads: list[str]) -> bool:
    return any(key == r or key.startswith(f"{r}.") for r in reads)


@pytest.mark.parametrize("quantizer,recon,metric", CASES)
def test_identity_changes_exactly_with_the_keys_read(quantizer, recon, metric):
    config = case_config(quantizer, recon, metric)
    reads = job_reads(config)
    before = job_identity(config)
    for key, value in _flatten(config).items():
        after = job_identity(with_value(config, key, perturbed(value)))
        assert (after != before) == covered(key, reads), (key, value)


def test_declared_reads_name_schema_keys():
    """Every static read of every registered stage is a key of the typed schema (a misspelt read would leave the
    real key out of the identity)."""
    for spec in SPECS.values():
        for r in spec.reads:
            if isinstance(r, str):
                assert _in_schema(r), (spec.name, r)


def test_reads_by_hand():
    """What each method reads, written out: the search and AdaLog's beam search read the metric, RepQ-ViT reads no
    metric or search setting, only the Hessian metric reads its gradient source, reconstruction off reads only its
    switch, the float model reads no method setting."""
    def reads(*overrides):
        cfg = job(*overrides)
        return {k for k in _flatten(cfg) if covered(k, job_reads(cfg))}

    adalog = reads("quantizer=adalog")
    assert {"metric.name", "quantizer.search.rounds", "calib.mode"} <= adalog
    assert not {"metric.grad", "metric.fisher_draws", "recon.iters"} & adalog and "recon.name" in adalog
    assert "metric.grad" in reads("quantizer=adalog", "metric=hessian")
    repq = reads("quantizer=repq_vit")
    assert not {k for k in repq if k.startswith(("metric.", "quantizer.search.")) or k == "calib.mode"}
    assert {"bits.w", "calib.n_images", "calib.seed", "quantizer.slots.softmax.quantizer"} <= repq
    assert "quantizer.slots.gelu.enabled" in repq and "quantizer.slots.gelu.quantizer" not in repq  # disabled slot
    ptq4vit = reads("quantizer=ptq4vit", "metric.grad=fisher")
    assert {"metric.grad", "metric.fisher_draws", "quantizer.search.alpha"} <= ptq4vit
    assert "metric.fisher_draws" not in reads("quantizer=ptq4vit", "metric.grad=kl_self")
    brecq = reads("quantizer=repq_vit", "recon=brecq")
    assert {"recon.iters", "recon.lr_rounding"} <= brecq and "metric.fisher_draws" not in brecq
    assert "metric.fisher_draws" in reads("quantizer=repq_vit", "recon=brecq", "recon.loss=fisher")
    fp32 = reads("quantizer=fp32")
    assert not {k for k in fp32 if k.split(".")[0] in ("bits", "metric", "calib", "recon")}
    assert {"model.name", "data.max_test", "seed", "quantizer.enabled"} <= fp32


def test_keys_of_older_code_are_kept():
    """A key this schema does not have (a results file of older code) may have been read then: it stays."""
    old = {**job("quantizer=ptq4vit"), "legacy": 1}
    old["quantizer"]["twin_softmax"] = True
    ident = job_identity(old)
    assert ident["legacy"] == 1 and ident["quantizer"]["twin_softmax"] is True


class RecordingPTQConfig(PTQConfig):
    """A PTQConfig that records which fields are read while `recording` is on."""

    seen: set[str] = set()
    recording = [False]

    def __getattribute__(self, name):
        if name in PTQConfig.__dataclass_fields__ and type(self).recording[0]:
            type(self).seen.add(name)
        return super().__getattribute__(name)


FIELD_KEYS = {"name": "quantizer.name", "enabled": "quantizer.enabled", "compat": "quantizer.compat",
              "w_bits": "bits.w", "a_bits": "bits.a", "recipe": "quantizer.recipe", "slots": "quantizer.slots",
              "metric": "metric.name", "grad": "metric.grad", "fisher_draws": "metric.fisher_draws",
              "mode": "calib.mode", "n_images": "calib.n_images", "batch_size": "calib.batch_size",
              "chunk_mb": "calib.chunk_mb", "capture_mb": "calib.capture_mb", "fast_paths": "calib.fast_paths",
              "seed": "calib.seed", "search": "quantizer.search", "load": "quantizer.load", "recon": "recon"}
TINY = ["model.checkpoint=null", "model.kwargs.depth=1", "calib.n_images=2", "calib.batch_size=2",
        "quantizer.search.n=4", "quantizer.search.rounds=1", "recon.iters=1", "recon.n_images=2",
        "recon.batch_size=2", "recon.eval_images=2"]
# AdaLog's beam search in two stages instead of six (its cheapest setting that still runs beam_search)
ADALOG_FAST = [f"+quantizer.slots.{s}.options.stages=2" for s in ("weight", "conv_weight", "input", "ln_input",
                                                                  "matmul")]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("overrides", [
    ("quantizer=base_ptq",), ("quantizer=ptq4vit", "metric.grad=fisher", "calib.mode=sequential"),
    ("quantizer=repq_vit", "recon=brecq", "recon.loss=fisher"), ("quantizer=adalog", "recon=adalog", *ADALOG_FAST),
    ("quantizer=ptq4vit_repq", "metric=cosine"),
    ("quantizer=aphq_official", "quantizer.search.rounds=1"),
], ids=lambda o: "-".join(o[:3]))
def test_declared_reads_cover_what_the_stages_read(overrides, one_thread):
    """Run the recipe on a 1-block model with a config object that records every field a stage reads: each
    recorded field's config key is in the job's declared reads."""
    from ptq.models import build_model
    from ptq.quant.config import resolve_ptq_config
    from ptq.quant.recipe import quantize_model, recipe_stages
    from ptq.quant.stage import STAGES

    cfg = compose_config(["logger=none", *TINY, *overrides])
    pcfg = resolve_ptq_config(cfg)
    pcfg = RecordingPTQConfig(**{f.name: getattr(pcfg, f.name) for f in dataclasses.fields(PTQConfig)})
    RecordingPTQConfig.seen = set()
    stages = recipe_stages(pcfg)
    originals = {n: STAGES[n] for n in stages}

    def recording(fn):
        def run(state):
            RecordingPTQConfig.recording[0] = True
            try:
                fn(state)
            finally:
                RecordingPTQConfig.recording[0] = False
        return run

    torch.manual_seed(0)
    model = build_model(cfg.model)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    try:
        STAGES.update({n: recording(fn) for n, fn in originals.items()})
        quantize_model(model, pcfg, x[:2], y[:2], progress=False, recon_data=(x, y))
    finally:
        STAGES.update(originals)
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    reads = job_reads(config)
    assert RecordingPTQConfig.seen   # the stages did read their settings through the recorder
    undeclared = sorted(FIELD_KEYS[f] for f in RecordingPTQConfig.seen if not covered(FIELD_KEYS[f], reads)
                        and not any(r.startswith(f"{FIELD_KEYS[f]}.") for r in reads))
    assert not undeclared, f"{stages} read {undeclared} without declaring it"


def test_adalog_metric_sweep_runs_two_jobs(tmp_path, one_thread):
    """`python run.py -m quantizer=adalog metric=mse,cosine` (tiny settings): two runs, different recorded metrics
    and calibrations, neither a copy of the other (issue 26: the second reused the first)."""
    from ptq.app import run
    from ptq.sweep import run_with_resume

    base = ["quantizer=adalog", "progress=false", "threads=1", "data.max_test=50", "calib.batch_size=2",
            "bits=w4a4", *TINY[:4], "quantizer.search.rounds=1", *ADALOG_FAST]
    results = {m: run_with_resume(run, compose_config(["logger=none", *base, f"metric={m}"]), tmp_path / m,
                                  reuse_siblings=True) for m in ("mse", "cosine")}
    mse, cosine = results["mse"], results["cosine"]
    assert "duplicate_of" not in mse and "duplicate_of" not in cosine
    assert (mse["metric"], cosine["metric"]) == ("mse", "cosine")
    scores = [[r["score"] for r in res["calibration"]["records"]] for res in (mse, cosine)]
    assert scores[0] != scores[1]   # searched with different metrics, so the recorded calibrations differ
