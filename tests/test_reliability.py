"""Resume that cannot be fooled, the multirun exit status, W&B logging as a recorded step, per-job locks, unique
temporary names, short job folder names, thread and worker defaults, corrupt images (issue 14). In-process."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from conftest import FAST
from omegaconf import OmegaConf

from ptq.results_file import RESULTS_SCHEMA_VERSION, results_problem
from tests.test_cli import run_in_process

QUICK = [*FAST, "data.max_test=100", "model.checkpoint=null"]


def ok_record(**extra) -> dict:
    return {"status": "ok", "schema_version": RESULTS_SCHEMA_VERSION, "model": "fmnist_vit", "quantizer": "fp32",
            "top1": 50.0, "top1_fp32": 50.0, "config": {}, **extra}


# -- what a trustworthy results.json is ---------------------------------------------------------------------------
@pytest.mark.parametrize("data,problem", [
    (None, "JSON null"), ([], "JSON list"), ("ok", "JSON str"), ({}, "status None"),
    ({"status": "done"}, "status 'done'"), ({"status": "ok"}, "model=null"),
    (ok_record(top1="50"), "top1=\"50\""), (ok_record(top1=True), "top1=true"), (ok_record(config=[]), "config=[]"),
    (ok_record(schema_version=RESULTS_SCHEMA_VERSION + 1), "schema_version"),
    ({"status": "failed", "config": {}}, "error=null"),
])
def test_untrusted_results(data, problem):
    assert problem in results_problem(data, EVERY_VERSION)


EVERY_VERSION = range(1, RESULTS_SCHEMA_VERSION + 1)  # what the report reads; resume reads only the current one


def test_trusted_results():
    assert results_problem(ok_record()) is None
    old = {k: v for k, v in ok_record().items() if k != "schema_version"}  # no field: version 1
    assert results_problem(old, EVERY_VERSION) is None
    assert "schema_version 1" in results_problem(old)  # an older layout is re-run on resume, never trusted
    assert results_problem({"status": "failed", "error": "x", "config": {}}, EVERY_VERSION) is None


# -- resume: an untrusted own file is moved aside and the job re-runs; stray files never affect other jobs ---------
BAD_FILES = {"null": "null", "truncated": '{"status": "ok", "top1": 5',
             "future_version": json.dumps(ok_record(schema_version=99))}


def _multirun(sweep: Path, monkeypatch, capsys, *grid: str) -> tuple[int, str]:
    code, out, err = run_in_process(["-m", *QUICK, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job${hydra.job.num}",
                                     *grid], monkeypatch, capsys)
    return code, out + err


@pytest.mark.parametrize("bad", BAD_FILES)
def test_resume_moves_untrusted_results_aside(tmp_path, monkeypatch, capsys, bad):
    sweep = tmp_path / "sweep"
    job, stray = sweep / "job0", sweep / "stray"
    for folder in (job, stray, sweep):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(BAD_FILES[bad])
    code, log = _multirun(sweep, monkeypatch, capsys)
    assert code == 0, log
    results = json.loads((job / "results.json").read_text())
    assert results["status"] == "ok" and results["schema_version"] == RESULTS_SCHEMA_VERSION
    (aside,) = job.glob("results.json.rejected-*")
    assert aside.read_text() == BAD_FILES[bad]  # kept, renamed
    for folder in (stray, sweep):  # other jobs' files and stray files are left alone
        assert (folder / "results.json").read_text() == BAD_FILES[bad]
    stamp = (job / "results.json").stat().st_mtime_ns
    code, log = _multirun(sweep, monkeypatch, capsys)  # resumed: skipped
    assert code == 0 and "skipped (force=true re-runs)" in log and (job / "results.json").stat().st_mtime_ns == stamp


def test_resume_keeps_a_good_result_despite_stray_files(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    code, _ = _multirun(sweep, monkeypatch, capsys, "data.max_test=100,120")
    assert code == 0
    good = {p: p.read_text() for p in sweep.glob("*/results.json")}
    assert len(good) == 2
    for name, content in (("stray", "null"), ("other", "[]")):
        (sweep / name).mkdir()
        (sweep / name / "results.json").write_text(content)
    code, log = _multirun(sweep, monkeypatch, capsys, "data.max_test=100,120")
    assert code == 0 and log.count("skipped (force=true re-runs)") == 2
    assert {p: p.read_text() for p in good} == good


# -- multirun exit status -----------------------------------------------------------------------------------------
def test_multirun_exit_status_and_summary(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    args = [a for a in QUICK if not a.startswith("model.checkpoint")]
    code, out, err = run_in_process(["-m", *args, "model.checkpoint=null,missing.safetensors,other.safetensors",
                                     f"hydra.sweep.dir={sweep}"], monkeypatch, capsys)
    assert code == 3
    (line,) = [x for x in err.splitlines() if x.startswith("multirun ")]
    assert line.startswith(f"multirun {sweep}: 3 jobs, 1 ok, 2 failed: ")
    assert "model.checkpoint=missing.safetensors" in line and "model.checkpoint=other.safetensors" in line
    assert not (sweep / ".outcomes").exists()
    code, out, err = run_in_process(["-m", *QUICK, "data.max_test=100,110", f"hydra.sweep.dir={tmp_path / 'ok'}"],
                                    monkeypatch, capsys)
    assert code == 0 and f"multirun {tmp_path / 'ok'}: 2 jobs, 2 ok, 0 failed" in err


# -- job folder names within file-system limits -------------------------------------------------------------------
def test_short_dirname():
    from ptq.run_dir import short_dirname

    assert short_dirname("bits=w4a4,model=fmnist_vit") == "bits=w4a4,model=fmnist_vit"
    long = ",".join(f"+model.kwargs.k{i}=value_number_{i}" for i in range(20))
    short = short_dirname(long)
    assert len(short.encode()) <= 200 and short.startswith(long[:100]) and short != short_dirname(long + "x")
    assert short_dirname(long) == short  # stable: the same overrides resume into the same folder


def test_long_override_list_gets_a_hashed_folder(tmp_path, monkeypatch, capsys):
    """A checkpoint with a 240-character file name: the job folder name (overrides joined) would pass the file
    system's 255-byte limit ("File name too long")."""
    import shutil

    from conftest import ROOT

    ckpt = tmp_path / ("c" * 228 + ".safetensors")
    shutil.copy(ROOT / "checkpoints" / "fmnist_vit.safetensors", ckpt)
    sweep = tmp_path / "sweep"
    args = [a for a in QUICK if not a.startswith("model.checkpoint")]
    code, out, err = run_in_process(["-m", *args, f"model.checkpoint={ckpt}", f"hydra.sweep.dir={sweep}"],
                                    monkeypatch, capsys)
    assert code == 0, err
    (results,) = sweep.rglob("results.json")
    assert json.loads(results.read_text())["status"] == "ok"
    assert all(len(part.encode()) <= 210 for part in results.parent.relative_to(sweep).parts)
    assert f"model.checkpoint={ckpt}" in (results.parent / ".hydra" / "overrides.yaml").read_text()  # all inside


# -- concurrency ---------------------------------------------------------------------------------------------------
def test_write_json_atomic_concurrent(tmp_path):
    from ptq.results_file import write_json_atomic

    path = tmp_path / "results.json"
    errors = []

    def writer(i):
        try:
            for j in range(30):
                write_json_atomic(path, {"writer": i, "n": j, "pad": "x" * 5000})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and json.loads(path.read_text())["n"] == 29
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_job_lock_excludes_and_survives_dead_holders(tmp_path):
    from ptq.job_lock import LOCK_FILE, holder, job_lock

    order = []
    with job_lock(tmp_path):
        assert holder(tmp_path / LOCK_FILE)["pid"] > 0

        def second():
            with job_lock(tmp_path):
                order.append("second")

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"] and not (tmp_path / LOCK_FILE).exists()
    # a lock file left by a process that died (pid that no longer runs): taken over at once
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "host": "x"}))
    with job_lock(tmp_path):
        order.append("third")
    assert order[-1] == "third"


# -- thread and worker defaults ------------------------------------------------------------------------------------
def test_default_threads_split_cores_between_joblib_jobs(monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    from ptq import cli

    monkeypatch.setattr("ptq.env.available_cores", lambda: 8)
    for target, n_jobs, expected in (("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", 2, 4),
                                     ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", 3, 2),
                                     ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", -1, 1),
                                     ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", 16, 1),
                                     ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", None, 8)):
        fake = OmegaConf.create({"launcher": {"_target_": target, "n_jobs": n_jobs}})
        monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda fake=fake: fake))
        assert cli.default_threads() == expected, (target, n_jobs)


def test_loader_workers_at_most_available_cores(monkeypatch):
    from ptq.data.dataset import loader_workers

    monkeypatch.setattr("ptq.env.available_cores", lambda: 2)
    assert [loader_workers(n) for n in (0, 1, 2, 8)] == [0, 1, 2, 2]


# -- corrupt images: skipped and counted with data.on_bad_file=skip ------------------------------------------------
def test_corrupt_image_skipped_and_counted(compose, tmp_path, image_folder):
    from ptq.app import run

    broken = image_folder / "val" / "dog" / "broken.JPEG"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    cfg = compose([*QUICK, "data=imagenet", f"data.root={image_folder}", "+model.kwargs.in_chans=3",
                   "calib.n_images=4", "data.on_bad_file=skip", "data.workers=2"])
    results = run(cfg, tmp_path / "run")
    assert results["num_test"] == 6 and results["data"]["skipped_files"] == [str(broken)]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["data"]["skipped_files"] == [str(broken)]


# -- W&B: an unreachable server falls back to an offline run; the record's state is kept in results.json ---------
def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_reachable_without_network():
    import socket

    from ptq.loggers.wandb_logger import server_reachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert server_reachable(f"http://127.0.0.1:{s.getsockname()[1]}", timeout=1)
    assert not server_reachable(f"http://127.0.0.1:{_closed_port()}", timeout=1)


@pytest.mark.slow
def test_wandb_online_unreachable_logs_offline(compose, tmp_path, monkeypatch):
    from ptq.app import run

    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")  # nothing listens: no network
    monkeypatch.setenv("WANDB_MODE", "online")  # logger.mode comes from it
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose([*[a for a in QUICK if a != "logger=none"], "logger=wandb"])
    assert cfg.logger.mode == "online"
    t0 = time.time()
    results = run(cfg, tmp_path / "job")
    assert time.time() - t0 < 60
    assert results["wandb"]["state"] == "done" and results["wandb"]["mode"] == "offline"
    saved = json.loads((tmp_path / "job" / "results.json").read_text())
    assert saved["wandb"] == results["wandb"] and saved["wandb"]["run_dir"].startswith("wandb/offline-run-")
    (record,) = (tmp_path / "job" / saved["wandb"]["run_dir"]).glob("run-*.wandb")
    assert b"top1_fp32" in record.read_bytes()


def test_wandb_online_init_failure_falls_back(compose, tmp_path, monkeypatch):
    """The server answers but the online run cannot start (no API key, server error): an offline run instead."""
    import sys

    from ptq.loggers import wandb_logger
    from tests.test_app import FakeWandb, _results

    fake = FakeWandb()
    real_init = fake.init

    def init(**kwargs):
        if kwargs["mode"] == "online":
            raise RuntimeError("api key not configured")
        return real_init(**kwargs)

    fake.init = init
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(wandb_logger, "server_reachable", lambda *a, **k: True)
    state = wandb_logger.log_to_wandb(compose(["logger=wandb", "logger.mode=online"]), _results(), tmp_path)
    assert state["state"] == "done" and state["mode"] == "offline" and [i["mode"] for i in fake.inits] == ["offline"]
    fake.init = lambda **kw: (_ for _ in ()).throw(RuntimeError("disk full"))
    state = wandb_logger.log_to_wandb(compose(["logger=wandb", "logger.mode=offline"]), _results(), tmp_path)
    assert state["state"] == "failed" and "disk full" in state["error"]


def test_resume_relogs_incomplete_wandb_record(compose, tmp_path, monkeypatch):
    """A job killed while logging (results.json says wandb pending) is logged on resume from its results.json,
    without running again; a finished record is not logged twice."""
    from ptq import loggers
    from ptq.sweep import run_with_resume

    cfg = compose([*[a for a in QUICK if a != "logger=none"], "logger=wandb", "logger.mode=offline"])
    out = tmp_path / "job"
    (out / "wandb" / "offline-run-1").mkdir(parents=True)
    saved = ok_record(config=OmegaConf.to_container(cfg, resolve=True), wandb={"state": "pending"})
    (out / "results.json").write_text(json.dumps(saved))
    logged = []
    monkeypatch.setattr("ptq.loggers.wandb_logger.log_to_wandb",
                        lambda cfg, results, out: logged.append(results["top1"]) or {"state": "done"})
    never = lambda cfg, out: pytest.fail("the finished job ran again")  # noqa: E731
    assert run_with_resume(never, cfg, out)["top1"] == 50.0
    assert logged == [50.0] and json.loads((out / "results.json").read_text())["wandb"] == {"state": "done"}
    assert (out / "wandb" / f"{loggers.INCOMPLETE_PREFIX}offline-run-1").is_dir()
    run_with_resume(never, cfg, out)
    assert logged == [50.0]
