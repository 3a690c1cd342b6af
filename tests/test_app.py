"""ptq.app.run in-process: results.json, the W&B logger (offline files, one run per job, never failing a job) and
the test-bed accuracies recorded with the committed checkpoints."""
from __future__ import annotations

import json
import sys
import types

import pytest
from conftest import FAST, ROOT

from ptq.app import RESULTS_FILE, run

QUICK = [*FAST, "model.checkpoint=null", "data.max_test=300"]


def test_run_writes_results(compose, tmp_path):
    cfg = compose(QUICK)
    results = run(cfg, tmp_path)
    saved = json.loads((tmp_path / RESULTS_FILE).read_text())
    for key in ("status", "top1", "top5", "top1_fp32", "agreement", "kl_fp32", "drop", "calib_seconds",
                "eval_seconds", "peak_memory_mb", "config", "env"):
        assert key in saved, key
    assert saved["status"] == "ok" and saved["num_test"] == 300 and saved["calib_images"] == 32
    assert saved["top1"] == saved["top1_fp32"] == results["top1"] and saved["drop"] == 0.0
    assert saved["agreement"] == 100.0 and saved["calib_seconds"] == 0.0 and saved["eval_seconds"] > 0
    assert saved["config"]["model"]["name"] == "fmnist_vit" and saved["config"]["data"]["max_test"] == 300
    assert saved["config"]["calib"] == {**saved["config"]["calib"], "n_images": 32, "seed": 3}
    env = saved["env"]
    assert env["torch"] and env["timm"] and env["device"] in ("cpu", "cuda", "cuda:0") and env["git_commit"]
    assert "params_file" not in saved  # the float model has no calibrated parameters


def _results(**extra):
    return {"status": "ok", "model": "fmnist_vit", "quantizer": "ptq4vit", "bits_w": 6, "bits_a": 6,
            "metric": "hessian", "top1": 80.0, "top1_fp32": 81.0, "drop": 1.0, "agreement": 95.0, "kl_fp32": 0.01,
            "calib_seconds": 3.0, "eval_seconds": 1.0, "peak_memory_mb": 500.0, "ptq_config": {"enabled": True},
            "config": {"seed": 0}, "env": {"torch": "x"}, **extra}


class FakeWandb(types.ModuleType):
    """Records what the logger asks of W&B."""

    def __init__(self, fail_on=None):
        super().__init__("wandb")
        self.inits, self.artifacts, self.finished, self.fail_on = [], [], 0, fail_on
        fake = self

        class Run:
            name = "run"

            def __init__(self):
                self.summary, self.logged = {}, {}

            def log(self, values):
                self.logged.update(values)

            def log_artifact(self, art):
                fake.artifacts.append(art)

            def finish(self):
                fake.finished += 1

        class Artifact:
            def __init__(self, name, type, metadata=None):
                self.name, self.type, self.files = name, type, []

            def add_file(self, path, name=None):
                self.files.append(name)

        class Table:
            def __init__(self, columns, data):
                self.columns, self.data = columns, data

        self.Run, self.Artifact, self.Table = Run, Artifact, Table
        self.Settings = lambda **kw: kw

    def init(self, **kwargs):
        if self.fail_on == "init":
            raise RuntimeError("network unreachable\nsecond line")
        self.inits.append(kwargs)
        self.run = self.Run()
        if self.fail_on == "summary":
            self.run.summary = None  # summary.update raises
        return self.run


def test_unknown_logger_fails_before_any_work(compose, tmp_path):
    from ptq.errors import PTQError

    with pytest.raises(PTQError, match=r"unknown logger.name=bogus; valid: none, wandb"):
        run(compose(QUICK + ["logger.name=bogus"]), tmp_path)
    assert not (tmp_path / RESULTS_FILE).exists()


def test_wandb_logger_arguments(compose, tmp_path, monkeypatch):
    from ptq.loggers.wandb_logger import log_to_wandb

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    (tmp_path / "quant_params.safetensors").write_bytes(b"x")
    cfg = compose(["logger=wandb", "logger.mode=offline", "logger.group=g1", "logger.tags=[extra]"])
    log_to_wandb(cfg, _results(params_file="quant_params.safetensors"), tmp_path)
    (init,) = fake.inits
    assert init["mode"] == "offline" and init["dir"] == str(tmp_path) and init["group"] == "g1"
    assert init["reinit"] == "finish_previous" and init["project"] == "ptq-vit"
    assert init["tags"] == ["fmnist_vit", "w6a6", "ptq4vit", "hessian", "extra"]
    assert init["name"] == "fmnist_vit_ptq4vit_w6a6"  # no Hydra job here: no override_dirname
    assert init["config"]["seed"] == 0 and init["config"]["env"] == {"torch": "x"}
    assert fake.run.summary["top1"] == 80.0 and fake.run.summary["calib_seconds"] == 3.0
    assert fake.run.summary["peak_memory_mb"] == 500.0 and fake.run.summary["drop"] == 1.0
    (art,) = fake.artifacts
    assert art.type == "quant-params" and art.files == ["quant_params.safetensors"]
    assert fake.finished == 1
    fake.artifacts.clear()
    log_to_wandb(compose(["logger=wandb", "logger.mode=offline", "logger.log_params=false"]),
                 _results(params_file="quant_params.safetensors"), tmp_path)
    assert fake.artifacts == [] and fake.inits[-1]["group"] is None and fake.finished == 2


def test_wandb_run_carries_the_compensation_table(compose, tmp_path, monkeypatch):
    """results.json's compensation record becomes the run's `compensation` Table row for row: QwT per block (R^2,
    kept, parameters added, seconds), ERQ per edited layer (kept, 0 parameters, its output MSE before / after,
    flips); a run without compensation logs no such table."""
    from ptq.loggers.wandb_logger import log_to_wandb

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = compose(["logger=wandb", "logger.mode=offline"])
    qwt = {"name": "qwt", "kept": 1, "added_params": 9312, "seconds": 1.7,
           "blocks": [{"block": "blocks.0", "r2": -0.412, "kept": False, "params": 0, "seconds": 1.2},
                      {"block": "blocks.1", "r2": 0.084, "kept": True, "params": 9312, "seconds": 0.5}]}
    log_to_wandb(cfg, _results(compensation=qwt), tmp_path)
    table = fake.run.logged["compensation"]
    assert table.columns == ["block", "r2", "kept", "params", "seconds"]
    assert table.data == [["blocks.0", -0.412, False, 0, 1.2], ["blocks.1", 0.084, True, 9312, 0.5]]
    erq = {"name": "erq", "blocks": [], "kept": 1, "added_params": 0,
           "layers": [{"layer": "blocks.0.attn.qkv", "kind": "linear", "flips": 7, "out_mse_before": 0.25,
                       "out_mse_after": 0.125, "seconds": 0.3}]}
    log_to_wandb(cfg, _results(compensation=erq), tmp_path)
    table = fake.run.logged["compensation"]
    assert table.columns == ["layer", "kept", "params", "out_mse_before", "out_mse_after", "flips", "seconds"]
    assert table.data == [["blocks.0.attn.qkv", True, 0, 0.25, 0.125, 7, 0.3]]
    log_to_wandb(cfg, _results(), tmp_path)
    assert "compensation" not in fake.run.logged


@pytest.mark.parametrize("fail_on", ["init", "summary"])
def test_wandb_problems_never_fail_the_job(compose, tmp_path, monkeypatch, caplog, fail_on):
    from ptq.loggers.wandb_logger import log_to_wandb

    fake = FakeWandb(fail_on)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with caplog.at_level("WARNING", logger="ptq"):
        log_to_wandb(compose(["logger=wandb", "logger.mode=offline"]), _results(), tmp_path)
    assert "W&B logging failed" in caplog.text
    assert fake.finished == (1 if fail_on == "summary" else 0)


def test_wandb_disabled_does_nothing(compose, tmp_path, monkeypatch):
    from ptq.loggers.wandb_logger import log_to_wandb

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    log_to_wandb(compose(["logger=wandb", "logger.mode=disabled"]), _results(), tmp_path)
    assert fake.inits == []


@pytest.mark.slow
def test_wandb_offline_run_files(compose, tmp_path, monkeypatch):
    """Two jobs in one process, logger=wandb in offline mode: each run folder gets its own offline W&B run."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose([*QUICK, "logger=wandb", "data.max_test=100"])
    ids = []
    for job in ("a", "b"):
        run(cfg, tmp_path / job)
        (offline,) = (tmp_path / job / "wandb").glob("offline-run-*")
        (record,) = offline.glob("run-*.wandb")
        assert record.stat().st_size > 0
        ids.append(record.stem)
    assert ids[0] != ids[1]


TESTBED = ["fmnist_vit", "fmnist_swin"]


@pytest.mark.slow
@pytest.mark.parametrize("model", TESTBED)
def test_testbed_checkpoint_accuracy(compose, model):
    """`python run.py model=NAME quantizer=fp32` reproduces the test_top1 recorded when the checkpoint was trained."""
    record = ROOT / "checkpoints" / f"{model}.json"
    if not record.is_file() or not record.with_suffix(".safetensors").is_file():
        pytest.skip(f"test-bed checkpoint {record.with_suffix('.safetensors')} not trained yet")
    expected = json.loads(record.read_text())["test_top1"]
    results = run(compose([f"model={model}", *FAST]))
    assert results["num_test"] == 10000
    assert abs(results["top1"] - expected) <= 0.0101, (results["top1"], expected)


@pytest.mark.slow
def test_wandb_run_carries_the_calibration_table(compose, tmp_path, monkeypatch):
    """A quantized job's W&B run holds its per-layer calibration record (layer, operand, quantizer, chosen
    parameter, score, seconds) as a Table, row for row what results.json records."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose(["quantizer=ptq4vit", "calib.n_images=2", "quantizer.search.n=2", "quantizer.search.rounds=1",
                   "+quantizer.slots.softmax.options.m_max=2", "data.max_test=64", "logger=wandb", "progress=false"])
    results = run(cfg, tmp_path / "job")
    records = results["calibration"]["records"]
    # 4 blocks x (qkv, proj, fc1, fc2: weight + input; two matmuls: 2 operands) + head (2) + patch conv (weight)
    assert len(records) == 4 * (4 * 2 + 2 * 2) + 2 + 1
    (offline,) = (tmp_path / "job" / "wandb").glob("offline-run-*")
    (table_file,) = (offline / "files" / "media" / "table").glob("calibration_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["layer", "operand", "quantizer", "param", "score", "candidates", "seconds"]
    assert len(table["data"]) == len(records)
    first = dict(zip(table["columns"], table["data"][0]))
    assert (first["layer"], first["operand"], first["quantizer"]) == (records[0]["layer"], records[0]["operand"],
                                                                      records[0]["quantizer"])
    assert json.loads(first["param"]) == records[0]["param"]


def test_logger_returns_its_record_and_the_job_writes_it(compose, tmp_path, monkeypatch):
    """One writer of results.json: the logger gets the results and returns what it did (the W&B state); the
    job (ptq.app.log_and_record) puts that into results.json, through ptq.results_file.write_results."""
    from ptq.app import log_and_record
    from ptq.loggers import log_run
    from ptq.results_file import write_results

    cfg = compose(["logger=wandb", "logger.mode=offline"])
    seen = []
    monkeypatch.setattr("ptq.loggers.wandb_logger.log_to_wandb",
                        lambda cfg, results, out: seen.append(dict(results)) or {"state": "done", "run_id": "r1"})
    write_results(tmp_path, _results(wandb={"state": "pending"}))
    before = (tmp_path / RESULTS_FILE).read_text()
    assert log_run(cfg, _results(), tmp_path) == {"state": "done", "run_id": "r1"}
    assert (tmp_path / RESULTS_FILE).read_text() == before  # the logger wrote nothing
    results = _results(wandb={"state": "pending"})
    log_and_record(cfg, results, tmp_path)
    assert results["wandb"] == {"state": "done", "run_id": "r1"} and len(seen) == 2
    assert json.loads((tmp_path / RESULTS_FILE).read_text())["wandb"] == {"state": "done", "run_id": "r1"}
    assert log_run(compose(["logger=none"]), _results(), tmp_path) is None
