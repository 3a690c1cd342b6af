"""Resume that cannot be fooled, the multirun exit status, W&B logging as a recorded step, per-job locks, unique
temporary names, short job folder names, thread and worker defaults, corrupt images (issue 14). In-process."""
from __future__ import annotations

import json
import re
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


# -- a results.json counts only in the folder of its own job (issue 27 item 2) -------------------------------------
class _NoCapture:
    """Stands for pytest's capsys in a module fixture (the output is left to pytest's own capture)."""

    @staticmethod
    def readouterr():
        return type("Captured", (), {"out": "", "err": ""})()


@pytest.fixture(scope="module")
def three_jobs(tmp_path_factory) -> Path:
    """A finished sweep of three float jobs (seeds 1..3: repeats of one measurement, a cell of n=3 in the report),
    run once per module; the float logits are computed once in-process."""
    sweep = tmp_path_factory.mktemp("three") / "sweep"
    with pytest.MonkeyPatch.context() as mp:
        code, log = _multirun(sweep, mp, _NoCapture, "seed=1,2,3")
    assert code == 0, log
    return sweep


def _sweep_of_three(three_jobs: Path, tmp_path: Path) -> Path:
    """A copy of the finished sweep (job folders with their Hydra records) for one test to change."""
    import shutil

    return Path(shutil.copytree(three_jobs, tmp_path / "sweep"))


def _claim_another_model(path: Path) -> None:
    """Make the file at `path` the result of another model (fmnist_swin) in place."""
    data = json.loads(path.read_text())
    data["model"] = data["config"]["model"]["name"] = "fmnist_swin"
    path.write_text(json.dumps(data))


def test_resume_reruns_a_job_holding_another_jobs_results(three_jobs, tmp_path, monkeypatch, capsys):
    sweep = _sweep_of_three(three_jobs, tmp_path)
    foreign = (sweep / "job0" / "results.json").read_text()
    (sweep / "job1" / "results.json").write_text(foreign)   # copied from another job's folder
    _claim_another_model(sweep / "job2" / "results.json")    # a result of another model
    swin = (sweep / "job2" / "results.json").read_text()
    code, log = _multirun(sweep, monkeypatch, capsys, "seed=1,2,3")
    assert code == 0 and log.count("skipped (force=true re-runs)") == 1   # job0 only
    warnings = [line for line in log.splitlines() if "moved aside" in line]   # Hydra's job log (stderr)
    assert len(warnings) == 2 and "seed=1" in warnings[0] and "seed=2" in warnings[0]
    assert "model.name=\"fmnist_swin\"" in warnings[1] and "model.name=\"fmnist_vit\"" in warnings[1]
    for job, seed, kept in (("job1", 2, foreign), ("job2", 3, swin)):
        (aside,) = (sweep / job).glob("results.json.rejected-*")
        assert aside.read_text() == kept
        data = json.loads((sweep / job / "results.json").read_text())
        assert data["config"]["seed"] == seed and data["model"] == "fmnist_vit"


def test_equivalent_results_never_reuse_a_file_foreign_to_its_folder(three_jobs, tmp_path):
    from ptq.cli import compose_config
    from ptq.sweep import equivalent_results

    sweep = _sweep_of_three(three_jobs, tmp_path)
    cfg = compose_config([*QUICK, "seed=2", "bits=w4a4"])   # the float model ignores bits: job1's effective config
    assert equivalent_results(cfg, sweep / "new")[0] == sweep / "job1"
    (sweep / "job0" / "results.json").write_text((sweep / "job1" / "results.json").read_text())
    assert equivalent_results(cfg, sweep / "new")[0] == sweep / "job1"   # job0 holds job1's file: not reused
    assert (sweep / "job0" / "results.json").exists()   # another job's folder: left for that job to set aside


def test_report_rejects_foreign_results_and_copies(three_jobs, tmp_path, caplog):
    """Before: 5 records, a cell of n=5 counting job0 three times and a row of fmnist_swin. After: the 2 files of
    their own jobs; the other 3 listed as rejected and moved aside, one warning line each."""
    import shutil

    from ptq import report

    sweep = _sweep_of_three(three_jobs, tmp_path)
    first = sweep / "job0" / "results.json"
    shutil.copy(first, sweep / "job1" / "results.json")           # another job's file
    (sweep / "stray").mkdir()
    shutil.copy(first, sweep / "stray" / "results.json")          # one run counted twice (no job record there)
    shutil.copytree(sweep / "job2", sweep / "job2_copy")          # ... and a whole job folder copied
    _claim_another_model(sweep / "job2_copy" / "results.json")    # ... then turned into another model's row
    rep = report.build_report([sweep, sweep / "job0"])            # job0 under both folders: read once
    assert sorted(rep["records"]["path"]) == ["job0", "job2"]
    assert set(rep["records"]["model"]) == {"fmnist_vit"}
    reasons = dict(zip(rep["unreadable"]["file"], rep["unreadable"]["reason"]))
    assert sorted(reasons) == sorted(str(sweep / j / "results.json") for j in ("job1", "job2_copy", "stray"))
    assert all(r.startswith("rejected: ") and "moved aside to results.json.rejected-" in r for r in reasons.values())
    assert "seed=1" in reasons[str(sweep / "job1" / "results.json")]
    assert "model.name" in reasons[str(sweep / "job2_copy" / "results.json")]
    assert f"copy of the run of {first}" in reasons[str(sweep / "stray" / "results.json")]
    for job in ("job1", "job2_copy", "stray"):
        assert not (sweep / job / "results.json").exists() and list((sweep / job).glob("results.json.rejected-*"))
    assert len([r for r in caplog.records if "moved aside" in r.getMessage()]) == 3
    assert "3 unreadable files skipped" in report.report_markdown(rep, [sweep])


def test_job_mismatch_by_hand(tmp_path):
    from ptq.results_file import job_mismatch

    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    data = ok_record(config={"seed": 1, "force": True, "calib": {"alpha": 0.001, "chunk_mb": None},
                             "logger": {"mode": "offline"}, "model": {"name": "fmnist_vit"}})
    assert job_mismatch(tmp_path / "elsewhere" / "results.json", data) is None   # no job record: nothing to check
    (job / ".hydra" / "overrides.yaml").write_text("- seed=1\n- force=false\n- calib.alpha=1e-3\n- model=fmnist_vit\n"
                                                   "- calib.chunk_mb=null\n")
    (job / ".hydra" / "config.yaml").write_text("seed: 1\nforce: false\ncalib:\n  alpha: 0.001\n  chunk_mb: null\n"
                                                "logger:\n  mode: ${oc.env:WANDB_MODE,offline}\nmodel:\n"
                                                "  name: fmnist_vit\n")
    assert job_mismatch(job / "results.json", data) is None   # force is bookkeeping; the interpolation not checked
    data["config"]["calib"]["alpha"] = 0.002
    assert "calib.alpha=0.002" in job_mismatch(job / "results.json", data) and "overrides.yaml" in \
        job_mismatch(job / "results.json", data)
    data["config"]["calib"]["alpha"] = 0.001
    data["config"]["model"]["name"] = "fmnist_swin"   # a group choice: caught by config.yaml
    assert "config.yaml" in job_mismatch(job / "results.json", data)
    del data["config"]["model"]
    assert "lacks model.name" in job_mismatch(job / "results.json", data)


# -- image modes: 16-bit scaled to 8 bits, every Pillow mode as 8-bit RGB, the rest refused (issue 27 item 3) -----
def _mode_images(folder: Path) -> dict:
    """One generated image per mode in `folder` (PNG, or TIFF where PNG cannot hold the mode) -> the 8-bit RGB
    array it must decode to, computed by hand from the generated values."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    h, w = 6, 5
    grey16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    grey16[0, :4] = [0, 255, 256, 65535]   # edges: 0 -> 0, 255 -> 0, 256 -> 1, 65535 -> 255
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    cmyk = rng.integers(0, 256, (h, w, 4), dtype=np.uint8).astype(np.int64)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (h, w), dtype=np.uint8)
    bits = rng.integers(0, 2, (h, w)).astype(bool)
    rgb = lambda g: np.repeat(g[..., None], 3, axis=2).astype(np.uint8)  # noqa: E731 - grey as RGB
    Image.fromarray(grey16).save(folder / "i16.png")                                    # mode I;16
    Image.fromarray(grey16.astype(np.int32), "I").save(folder / "i32.tiff")             # mode I
    Image.fromarray(grey).save(folder / "l.png")
    Image.fromarray(np.stack([grey, rgba[..., 3]], axis=2), "LA").save(folder / "la.png")
    p = Image.fromarray(index, "P")
    p.putpalette(palette.tobytes())
    p.save(folder / "p.png")
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(cmyk.astype(np.uint8), "CMYK").save(folder / "cmyk.tiff")
    Image.fromarray(bits).save(folder / "one.png")                                      # mode 1
    return {"i16.png": rgb(grey16 >> 8), "i32.tiff": rgb(grey16 >> 8), "l.png": rgb(grey), "la.png": rgb(grey),
            "p.png": palette[index], "rgba.png": rgba[..., :3],
            # Pillow's CMYK -> RGB: (255 - c)(255 - k) / 255, rounded
            "cmyk.tiff": np.round((255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255).astype(np.uint8),
            "one.png": rgb(bits * 255)}


def test_image_modes_decode_to_8bit_rgb(tmp_path):
    import numpy as np
    from PIL import Image

    from ptq.data.image_folder import LabelledFolder

    (tmp_path / "val" / "x").mkdir(parents=True)
    expected = _mode_images(tmp_path / "val" / "x")
    assert Image.open(tmp_path / "val" / "x" / "i16.png").mode == "I;16"
    assert Image.open(tmp_path / "val" / "x" / "i16.png").convert("RGB").getextrema()[0][1] == 255  # Pillow clips
    folder = LabelledFolder(str(tmp_path / "val"))
    for index, (path, _) in enumerate(folder.samples):
        image, _ = folder[index]
        got = np.asarray(image)
        want = expected[Path(path).name]
        assert image.mode == "RGB" and got.shape == want.shape, path
        tolerance = 1 if path.endswith("cmyk.tiff") else 0   # the rounding of a half
        assert np.abs(got.astype(int) - want.astype(int)).max() <= tolerance, path
    assert len(folder.samples) == len(expected)


@pytest.mark.parametrize("name,mode,value,reason", [("float.tiff", "F", 1.5, "mode F (32-bit float)"),
                                                     ("wide.tiff", "I", 70000, "mode I with values 70000..70000")])
def test_image_mode_without_8bit_reading_refused(tmp_path, name, mode, value, reason):
    import re

    import numpy as np
    from PIL import Image

    from ptq.data.image_folder import BadFile, BadFiles, LabelledFolder
    from ptq.errors import PTQError

    (tmp_path / "val" / "x").mkdir(parents=True)
    Image.fromarray(np.full((4, 4), value, "float32" if mode == "F" else "int32"), mode).save(tmp_path / "val" / "x" /
                                                                                             name)
    image, label = LabelledFolder(str(tmp_path / "val"))[0]
    assert isinstance(image, BadFile) and reason in image.error
    with pytest.raises(PTQError, match=re.escape(f"image {tmp_path / 'val' / 'x' / name} cannot be read "
                                                 f"(UnsupportedImage: {reason}")):
        BadFiles("error").keep([(image, label)])


# -- ImageNet-style folders keep ImageNet-1k labels; a label space the model cannot have is refused (item 4) -------
def tiny_vit(num_classes: int) -> list[str]:
    from tests.test_data import TINY_VIT

    return [*(a for a in TINY_VIT if "num_classes" not in a), f"+model.kwargs.num_classes={num_classes}"]


def test_shipped_synsets_are_the_canonical_imagenet_1k_order():
    """Independent source: timm's ImageNetInfo (its label order is the one of every pretrained ImageNet-1k model)."""
    from timm.data import ImageNetInfo

    from ptq.data.image_folder import imagenet_synsets

    synsets = list(imagenet_synsets())
    assert synsets == list(ImageNetInfo().label_names()) == sorted(set(synsets)) and len(synsets) == 1000
    assert synsets[0] == "n01440764" and synsets[-1] == "n15075141"


def _as_wnids(image_folder: Path, wnids: list[str]) -> None:
    for split in ("train", "val"):
        for cls, wnid in zip(("cat", "dog", "fox"), wnids):
            (image_folder / split / cls).rename(image_folder / split / wnid)


def test_wnid_subset_keeps_imagenet_1k_labels(compose, image_folder):
    import shutil

    import torch

    from ptq.data import build_data
    from ptq.models import build_model

    all_wnids = sorted((Path(__file__).parents[1] / "ptq" / "data" / "imagenet_synsets.txt").read_text().split())
    wnids = [all_wnids[7], all_wnids[283], all_wnids[999]]   # three classes; the sorted list's indices by hand
    _as_wnids(image_folder, wnids)
    shutil.rmtree(image_folder / "val" / wnids[0])             # the val split holds two of them
    cfg = compose(["data=imagenet", f"data.root={image_folder}", "data.workers=0", "calib.n_images=12",
                   *tiny_vit(1000)])
    data = build_data(cfg, build_model(cfg.model))
    train_labels = [7] * 4 + [283] * 4 + [999] * 4   # 4 images per class, sorted folders
    assert sorted(data.calib_labels.tolist()) == train_labels and data.info["labels"] == "imagenet-1k"
    assert torch.cat([y for _, y in data.test_batches(4)]).tolist() == [283, 283, 999, 999]


@pytest.mark.parametrize("folders,num_classes,expected", [
    ("wnids", 10, "class folder 'n01677366' has label 39 (imagenet-1k) but the model has 10 classes"),
    ("wnids", 21843, "has 21843 classes, not ImageNet-1k's 1000"),
    ("names", 1000, "class folder 'cat', not an ImageNet-1k synset"),
    ("names", 2, "class folder 'fox' has label 2 (folder order) but the model has 2 classes"),
])
def test_label_space_the_model_cannot_have_is_refused(compose, image_folder, folders, num_classes, expected):
    from ptq.data import build_data
    from ptq.errors import PTQError
    from ptq.models import build_model

    if folders == "wnids":
        _as_wnids(image_folder, ["n01440764", "n01443537", "n01677366"])   # labels 0, 1 and 39 of ImageNet-1k
    cfg = compose(["data=imagenet", f"data.root={image_folder}", "data.workers=0", "calib.n_images=4",
                   *tiny_vit(num_classes)])
    with pytest.raises(PTQError, match=re.escape(expected)):
        build_data(cfg, build_model(cfg.model))


def test_non_imagenet_folders_keep_folder_order(compose, image_folder):
    """Folder names that are not wnids, with a model of at least as many classes: labels 0..k-1 in sorted order."""
    import torch

    from ptq.data import build_data
    from ptq.models import build_model

    for num_classes in (3, 5):
        cfg = compose(["data=imagenet", f"data.root={image_folder}", "data.workers=0", "calib.n_images=2",
                       *tiny_vit(num_classes)])
        data = build_data(cfg, build_model(cfg.model))
        assert torch.cat([y for _, y in data.test_batches(6)]).tolist() == [0, 0, 1, 1, 2, 2]
        assert data.info["labels"] == "folder order"


# -- disk full: one line naming the file; a multirun still ends with its summary and exit 3 (item 5) ---------------
def _disk_full_under(monkeypatch, folder: Path) -> None:
    """Every JSON file written through ptq's atomic writer (results, failure records, multirun outcomes) below
    `folder` fails as on a full disk: OSError(ENOSPC) from the temporary file."""
    import errno
    import os
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own argument name
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_disk_full_single_run_names_the_file(tmp_path, monkeypatch, capsys):
    from tests.test_cli import assert_one_line_error

    run = tmp_path / "run"
    _disk_full_under(monkeypatch, run)
    code, out, err = run_in_process([*QUICK, f"hydra.run.dir={run}"], monkeypatch, capsys)
    assert code == 1 and "Traceback" not in out + err
    assert_one_line_error(code, err, f"cannot write {run / 'results.json'}: No space left on device (ENOSPC)")
    assert not run.exists()   # the run's folder (created by it) is removed: nothing half-written


def test_disk_full_quant_params_names_the_file(tmp_path, monkeypatch):
    import errno

    from ptq.cli import compose_config
    from ptq.errors import WriteError
    from ptq.models import build_model
    from ptq.quant import resolve_ptq_config, save_quant_params, wrap_model

    def full(tensors, filename, metadata=None):   # what safetensors raises on a full disk
        Path(filename).write_bytes(b"partial")
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    cfg = compose_config(["model.checkpoint=null"])
    model = build_model(cfg.model)
    wrap_model(model, resolve_ptq_config(cfg))
    with pytest.raises(WriteError, match=re.escape(f"cannot write {tmp_path / 'q.safetensors'}: No space left on "
                                                   "device (ENOSPC)")) as caught:
        save_quant_params(model, tmp_path / "q.safetensors")
    assert caught.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())   # no temporary file left


@pytest.mark.parametrize("full", ["sweep", "job1"])
def test_disk_full_multirun_ends_with_summary_and_exit_3(tmp_path, monkeypatch, capsys, full):
    """The whole sweep folder full (no results, failure records nor outcome files can be written), or only job 1's
    folder: every job is tried, the summary counts each, exit 3, no traceback."""
    sweep = tmp_path / "sweep"
    _disk_full_under(monkeypatch, sweep if full == "sweep" else sweep / "job1")
    code, log = _multirun(sweep, monkeypatch, capsys, "seed=1,2")
    assert code == 3 and "Traceback" not in log, log
    (line,) = [x for x in log.splitlines() if x.startswith("multirun ")]
    expected = "2 jobs, 0 ok, 2 failed: job0; job1" if full == "sweep" else "2 jobs, 1 ok, 1 failed: job1"
    assert line.startswith(f"multirun {sweep}: {expected}")
    assert f"cannot write {sweep / 'job1' / 'results.json'}: No space left on device" in log
    assert (sweep / "job0" / "results.json").exists() == (full == "job1")
    assert not (sweep / "job1" / "results.json").exists() and not list(sweep.rglob("*.tmp"))
