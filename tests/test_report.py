"""ptq.report on synthetic results.json files whose tables are worked out by hand."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ptq import report
from ptq.reference_results import TABLE1, ablation_reference, table1_reference
from tests.results_factory import jobs_from_runs_csv, qwt_record, write_compensated_job, write_job

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def table1_sweep(tmp_path) -> Path:
    d = tmp_path / "table1"
    write_job(d / "fp_w8", "fmnist_vit", "fp32", 8, 90.0)
    write_job(d / "fp_w6", "fmnist_vit", "fp32", 6, 90.0, duplicate_of="fp_w8")
    write_job(d / "base_w8", "fmnist_vit", "base_ptq", 8, 89.0)
    write_job(d / "base_w6", "fmnist_vit", "base_ptq", 6, 80.0)
    write_job(d / "ours_w8_s1", "fmnist_vit", "ptq4vit", 8, 89.5, seed=1)
    write_job(d / "ours_w8_s2", "fmnist_vit", "ptq4vit", 8, 89.7, seed=2)
    write_job(d / "ours_w6", "fmnist_vit", "ptq4vit", 6, 85.0)
    write_job(d / "paper_w6", "vit_small_patch16_224", "ptq4vit", 6, 78.0, fp32=81.4)
    write_job(d / "swin_bad", "fmnist_swin", "ptq4vit", 6, None, status="failed")
    return d


def rows(table: report.Table) -> list[dict]:
    return table.display.to_dict("records")


def test_reference_numbers_transcribed():
    assert len(TABLE1) == 11
    assert table1_reference("vit_base_patch16_384", "BasePTQ", "W6A6") == 46.89
    assert table1_reference("swin_base_patch4_window12_384.ms_in22k_ft_in1k", "FP32") == 86.44  # tag stripped
    assert table1_reference("vit_small_patch16_224", "PTQ4ViT", "W4A4") == 42.57  # quoted by later papers
    assert table1_reference("fmnist_vit", "PTQ4ViT", "W8A8") is None
    assert ablation_reference("vit_base_patch16_384", (True, True, True), "W6A6") == 83.19
    assert ablation_reference("vit_small_patch16_224", (False, False, False), "W8A8") == 80.47


def test_main_table_by_hand(table1_sweep):
    rep = report.build_report([table1_sweep])
    assert rep["layout"] == "main"
    assert list(rep["table"].display.columns) == ["model", "FP32", "BasePTQ W8A8", "BasePTQ W6A6",
                                                  "PTQ4ViT W8A8", "PTQ4ViT W6A6"]
    # ptq4vit W8A8: two seeds 89.5 and 89.7 -> mean 89.60, sample std sqrt(0.02) = 0.1414
    assert rows(rep["table"]) == [
        {"model": "fmnist_vit", "FP32": "90.00", "BasePTQ W8A8": "89.00†", "BasePTQ W6A6": "80.00†",
         "PTQ4ViT W8A8": "89.60 ± 0.14 (n = 2)", "PTQ4ViT W6A6": "85.00†"},
        {"model": "vit_small_patch16_224", "FP32": "81.40 [81.39]", "BasePTQ W8A8": "[80.47]",
         "BasePTQ W6A6": "[70.24]", "PTQ4ViT W8A8": "[81.00]", "PTQ4ViT W6A6": "78.00† [78.63]"}]  # [reference]
    # drop = fp32 - top1; reference drop 81.39 - 78.63 = 2.76
    assert rows(rep["drop"]) == [
        {"model": "fmnist_vit", "BasePTQ W8A8": "1.00†", "BasePTQ W6A6": "10.00†",
         "PTQ4ViT W8A8": "0.40 ± 0.14 (n = 2)", "PTQ4ViT W6A6": "5.00†"},
        {"model": "vit_small_patch16_224", "BasePTQ W8A8": "[0.92]", "BasePTQ W6A6": "[11.15]",
         "PTQ4ViT W8A8": "[0.39]", "PTQ4ViT W6A6": "3.40† [2.76]"}]
    cells = rep["table"].cells.set_index(["model", "column"])
    assert cells.loc[("fmnist_vit", "PTQ4ViT W8A8"), "n"] == 2
    assert cells.loc[("fmnist_vit", "PTQ4ViT W8A8"), "std"] == pytest.approx(0.02 ** 0.5)
    assert cells.loc[("fmnist_vit", "FP32"), "n"] == 1  # the duplicate fp32 job is not counted
    assert rep["table"].notes == []
    failed = rep["failed"].to_dict("records")
    assert failed == [{"job": "swin_bad", "model": "fmnist_swin", "method": "PTQ4ViT", "bits": "W6A6",
                       "error": "PTQError: checkpoint /nope.safetensors does not exist"}]


def test_cli_writes_md_csv_tex(table1_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert report.main([str(table1_sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| fmnist_vit            | 90.00" in printed and "### Failed jobs" in printed
    assert "9 jobs: 8 ok (1 reusing a sibling's results), 1 failed" in printed
    names = sorted(p.name for p in out.iterdir())
    assert names == ["agreement.csv", "agreement.md", "agreement.tex", "cells.csv", "drop.csv", "drop.md",
                     "drop.tex", "failed.csv", "kl.csv", "kl.md", "kl.tex", "runs.csv", "settings.csv",
                     "settings.md", "settings.tex", "table.csv", "table.md", "table.tex"]
    tex = (out / "table.tex").read_text()
    assert r"89.60 $\pm$ 0.14" in tex and r"vit\_small\_patch16\_224" in tex
    csv = (out / "table.csv").read_text().splitlines()
    assert csv[0] == "model,FP32,BasePTQ W8A8,BasePTQ W6A6,PTQ4ViT W8A8,PTQ4ViT W6A6"
    assert report.main([str(table1_sweep), "--out", str(tmp_path / "md"), "--format", "md"]) == 0
    assert sorted(p.name for p in (tmp_path / "md").iterdir()) == ["agreement.md", "drop.md", "kl.md",
                                                                   "settings.md", "table.md"]
    assert report.main([str(table1_sweep), "--format", "pdf"]) == 2
    assert report.main([str(tmp_path / "missing")]) == 2


def test_varying_knob_is_a_split_not_an_average(tmp_path):
    d = tmp_path / "mixed"
    write_job(d / "a", "fmnist_vit", "ptq4vit", 8, 88.0, max_test=100)
    write_job(d / "b", "fmnist_vit", "ptq4vit", 8, 86.0, max_test=500)
    write_job(d / "c", "fmnist_vit", "ptq4vit", 8, 87.0, max_test=500, seed=4)  # a repeat: averaged
    table = report.build_report([d])["table"]
    assert rows(table) == [{"model": "fmnist_vit", "FP32": "90.00", "PTQ4ViT W8A8 100 test img": "88.00†",
                            "PTQ4ViT W8A8 500 test img": "86.50 ± 0.71"}]
    assert table.notes == []


def test_setting_some_runs_lack_is_flagged(tmp_path):
    d = tmp_path / "mixed"
    write_job(d / "a", "fmnist_vit", "ptq4vit", 8, 88.0)
    old = json.loads((write_job(d / "b", "fmnist_vit", "ptq4vit", 8, 86.0) / "results.json").read_text())
    del old["config"]["calib"]["n_images"]  # an older file without the key
    (d / "b" / "results.json").write_text(json.dumps(old))
    table = report.build_report([d])["table"]
    assert rows(table)[0]["PTQ4ViT W8A8"] == "87.00 ± 1.41"
    assert table.notes == ["cell model=fmnist_vit, method=PTQ4ViT, bits=W8A8, setting=, column=PTQ4ViT W8A8 "
                           "aggregates 2 runs that differ in calib.n_images"]


def test_unknown_knob_and_unknown_method(tmp_path):
    """A setting the report has no word for is labelled by its leaf name; a preset it has no label for by its
    name; bookkeeping (threads) and seeds never split."""
    d = tmp_path / "new"
    for gran, top1 in (("tensor", 70.0), ("channel", 75.0)):
        folder = write_job(d / gran, "fmnist_vit", "my_method", 4, top1, metric="mse")
        data = json.loads((folder / "results.json").read_text())
        data["config"]["quantizer"]["slots"] = {"linear_in": {"quantizer": "uniform", "granularity": gran}}
        data["config"]["threads"] = 1 if gran == "tensor" else 2
        (folder / "results.json").write_text(json.dumps(data))
    rep = report.build_report([d])
    assert rep["layout"] == "main"
    assert list(rep["table"].display.columns) == ["model", "FP32", "my_method W4A4 granularity channel",
                                                  "my_method W4A4 granularity tensor"]


def test_varying_setting_becomes_a_column(tmp_path):
    d = tmp_path / "calib_size"
    for n, top1 in ((128, 86.0), (32, 84.0)):
        write_job(d / f"n{n}", "fmnist_vit", "ptq4vit", 6, top1, n_images=n)
    rep = report.build_report([d])
    assert rep["layout"] == "main"
    assert rows(rep["table"]) == [{"model": "fmnist_vit", "FP32": "90.00", "PTQ4ViT W6A6 32 calib img": "84.00†",
                                   "PTQ4ViT W6A6 128 calib img": "86.00†"}]


def test_compat_sweep_stays_in_main_layout(tmp_path):
    d = tmp_path / "compat"
    write_job(d / "p", "fmnist_vit", "ptq4vit", 6, 85.0, compat="paper")
    write_job(d / "o", "fmnist_vit", "ptq4vit", 6, 83.0, compat="official")  # grad kl_self by default
    rep = report.build_report([d])
    assert rep["layout"] == "main"
    assert list(rep["table"].display.columns) == ["model", "FP32", "PTQ4ViT W6A6 paper pseudo_ce grad",
                                                  "PTQ4ViT W6A6 official kl_self grad"]


def test_ablation_layout_by_hand(tmp_path):
    d = tmp_path / "ablation"
    # top1 = 80 + bits + HG + 2 ST + 4 GT, so every row is distinguishable
    for metric in ("cosine", "hessian"):
        for st in (False, True):
            for gt in (False, True):
                for bits in (8, 6):
                    top1 = 80 + bits + (metric == "hessian") + 2 * st + 4 * gt
                    write_job(d / f"{metric}{st}{gt}{bits}", "fmnist_vit", "ptq4vit", bits, top1, metric=metric,
                              twin_softmax=st, twin_gelu=gt)
    write_job(d / "paper", "vit_base_patch16_384", "ptq4vit", 6, 83.0, fp32=86.0)
    rep = report.build_report([d])
    assert rep["layout"] == "ablation"
    got = [(r["HG"], r["ST"], r["GT"], r["fmnist_vit W8A8"], r["fmnist_vit W6A6"]) for r in rows(rep["table"])]
    assert got == [("", "", "", "88.00†", "86.00†"), ("✓", "", "", "89.00†", "87.00†"),
                   ("✓", "✓", "", "91.00†", "89.00†"), ("✓", "", "✓", "93.00†", "91.00†"),
                   ("", "✓", "✓", "94.00†", "92.00†"), ("✓", "✓", "✓", "95.00†", "93.00†"),  # the spec's six rows
                   ("", "", "✓", "92.00†", "90.00†"), ("", "✓", "", "90.00†", "88.00†")]  # then the other two
    last = rows(rep["table"])[5]
    assert last["vit_base_patch16_384 W6A6"] == "83.00† [83.19]"
    assert rows(rep["table"])[0]["vit_base_patch16_384 W6A6"] == "[46.89]"  # reference beside a missing run
    assert rows(rep["drop"])[5]["vit_base_patch16_384 W6A6"] == "3.00† [2.81]"  # 86.00 - 83.19
    assert any(n.startswith("FP32: fmnist_vit 90.00, vit_base_patch16_384 86.00 [86.00]") for n in rep["table"].notes)


def test_metrics_layout_by_hand(tmp_path):
    d = tmp_path / "metrics"
    for metric, top1 in (("mse", 70.0), ("cosine", 75.0)):
        write_job(d / f"{metric}_kl_self", "fmnist_vit", "ptq4vit", 4, top1, metric=metric, grad="kl_self")
        write_job(d / f"{metric}_fisher", "fmnist_vit", "ptq4vit", 4, top1, metric=metric, grad="fisher",
                  duplicate_of=f"{metric}_kl_self")
    for grad, top1 in (("fisher", 81.0), ("kl_self", 72.0)):
        write_job(d / f"hessian_{grad}", "fmnist_vit", "ptq4vit", 4, top1, metric="hessian", grad=grad)
    rep = report.build_report([d])
    assert rep["layout"] == "metrics"
    assert rows(rep["table"]) == [{"metric": "mse", "grad": "—", "fmnist_vit W4A4": "70.00†"},
                                  {"metric": "cosine", "grad": "—", "fmnist_vit W4A4": "75.00†"},
                                  {"metric": "hessian", "grad": "kl_self", "fmnist_vit W4A4": "72.00†"},
                                  {"metric": "hessian", "grad": "fisher", "fmnist_vit W4A4": "81.00†"}]


@pytest.mark.parametrize("content", ["{not json", "null", "[]", "42", '"text"', '{"config": [1]}',
                                     '{"schema_version": 99, "config": {}}', '{"schema_version": "2"}',
                                     '{"status": "ok"}', '{"status": "done"}',
                                     '{"status": "ok", "schema_version": 99}'])
def test_unreadable_results_are_skipped_and_listed(tmp_path, content, capsys):
    d = tmp_path / "broken"
    write_job(d / "ok", "fmnist_vit", "ptq4vit", 8, 88.0)
    (d / "bad").mkdir()
    (d / "bad" / "results.json").write_text(content)
    rep = report.build_report([d])
    assert rows(rep["table"])[0]["PTQ4ViT W8A8"] == "88.00†"
    assert len(rep["records"]) == 1 and len(rep["failed"]) == 0
    assert rep["unreadable"]["file"].tolist() == [str(d / "bad" / "results.json")]
    assert report.main([str(d), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "1 jobs: 1 ok, 0 failed, 1 unreadable files skipped" in printed
    assert "### Unreadable results files (skipped)" in printed and "bad/results.json" in printed
    assert (tmp_path / "out" / "unreadable.csv").read_text().count("bad/results.json") == 1


def test_only_unreadable_files_is_an_error(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("null")
    assert report.main([str(tmp_path)]) == 2
    assert "no readable results.json" in capsys.readouterr().err


def test_schema_versions_one_and_two_read_alike(tmp_path):
    d = tmp_path / "versions"
    write_job(d / "v1", "fmnist_vit", "ptq4vit", 8, 88.0)  # no schema_version: version 1
    v2 = write_job(d / "v2", "fmnist_vit", "ptq4vit", 8, 86.0, seed=4) / "results.json"
    v2.write_text(json.dumps(dict(json.loads(v2.read_text()), schema_version=2)))
    rep = report.build_report([d])
    assert rep["records"]["schema_version"].tolist() == [1, 2]
    assert rows(rep["table"])[0]["PTQ4ViT W8A8"] == "87.00 ± 1.41"


def test_ablation_from_operand_slots(tmp_path):
    """Without the twin switches (configs with operand slots), ST / GT come from the quantizer a slot names."""
    d = tmp_path / "slots"
    for st in (False, True):
        folder = write_job(d / f"st{st}", "fmnist_vit", "ptq4vit", 6, 80.0 + 2 * st)
        data = json.loads((folder / "results.json").read_text())
        q = data["config"]["quantizer"]
        del q["twin_softmax"], q["twin_gelu"]
        q["slots"] = {"softmax": {"quantizer": "twin_softmax" if st else "uniform"},
                      "gelu": {"quantizer": "twin_gelu"}}
        (folder / "results.json").write_text(json.dumps(data))
    rep = report.build_report([d])
    assert rep["layout"] == "ablation"
    assert [(r["HG"], r["ST"], r["GT"], r["fmnist_vit W6A6"]) for r in rows(rep["table"])] == [
        ("✓", "", "✓", "80.00†"), ("✓", "✓", "✓", "82.00†")]


@pytest.mark.parametrize("name", ["table1", "ablation", "metrics", "calib_size", "seeds", "compat"])
def test_committed_tables_regenerate(name, tmp_path, monkeypatch):
    """Each committed experiments/<name>/ table, rebuilt from its runs.csv (results.json per job, configs composed
    from the job folders' override names), comes out byte for byte as committed."""
    committed = ROOT / "experiments" / name
    monkeypatch.chdir(tmp_path)
    jobs_from_runs_csv(committed / "runs.csv", Path("multirun") / name)
    assert report.main([f"multirun/{name}", "--out", "out"]) == 0
    for path in sorted(committed.iterdir()):
        assert (tmp_path / "out" / path.name).read_text() == path.read_text(), path.name


def test_report_to_wandb_offline(table1_sweep, tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    assert report.main([str(table1_sweep), "--out", str(out), "--format", "md", "--wandb"]) == 0
    printed = capsys.readouterr().out
    assert "W&B: offline run" in printed and "in group table1 of project ptq-vit" in printed
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    logged = sorted(p.name.split("_")[0] for p in (runs[0] / "files" / "media" / "table").glob("*.table.json"))
    assert logged == sorted([*report.TABLES, "cells", "runs", "failed"])
    table = json.loads(next((runs[0] / "files" / "media" / "table").glob("table_*.table.json")).read_text())
    assert table["columns"] == ["model", "FP32", "BasePTQ W8A8", "BasePTQ W6A6", "PTQ4ViT W8A8", "PTQ4ViT W6A6"]
    assert table["data"][0][4] == "89.60 ± 0.14 (n = 2)"


def test_model_order():
    models = ["swin_tiny_patch4_window7_224", "fmnist_swin", "vit_base_patch16_384.augreg_in21k_ft_in1k", "fmnist_vit",
              "vit_small_patch32_224"]
    assert report.model_order(models) == ["fmnist_vit", "fmnist_swin", "vit_small_patch32_224",
                                          "vit_base_patch16_384.augreg_in21k_ft_in1k", "swin_tiny_patch4_window7_224"]


def test_main_layout_of_a_metrics_sweep_has_no_empty_settings(tmp_path):
    d = tmp_path / "metrics"
    write_job(d / "mse", "fmnist_vit", "ptq4vit", 6, 88.0, metric="mse", grad="kl_self")
    write_job(d / "hes", "fmnist_vit", "ptq4vit", 6, 89.0, metric="hessian", grad="fisher")
    table = report.main_table(report.load_records([d]))
    assert list(table.display.columns) == ["model", "FP32", "PTQ4ViT W6A6 hessian", "PTQ4ViT W6A6 mse"]


def test_repq_reference_in_brackets(tmp_path):
    """RepQ-ViT's published numbers (SPEC-repq section 6) sit beside a RepQ-ViT run on a paper model."""
    assert table1_reference("deit_small_patch16_224", "RepQ-ViT", "W4A4") == 69.03
    assert table1_reference("swin_small_patch4_window7_224", "RepQ-ViT", "W6A6") == 82.79
    assert table1_reference("vit_small_patch16_224", "RepQ-ViT", "W3A3") is None
    write_job(tmp_path / "repq_w4", "vit_small_patch16_224", "repq_vit", 4, 64.0, fp32=81.4, metric="hessian")
    rep = report.build_report([tmp_path])
    assert rows(rep["table"]) == [{"model": "vit_small_patch16_224", "FP32": "81.40 [81.39]",
                                   "RepQ-ViT W4A4": "64.00† [65.05]"}]


def test_disabled_twin_slot_is_not_counted(tmp_path):
    """BasePTQ-style configs name twin_softmax on a disabled slot: the effective settings drop it, so ST is off."""
    d = tmp_path / "disabled"
    folder = write_job(d / "a", "fmnist_vit", "ptq4vit", 6, 80.0)
    data = json.loads((folder / "results.json").read_text())
    q = data["config"]["quantizer"]
    del q["twin_softmax"], q["twin_gelu"]
    q["slots"] = {"softmax": {"quantizer": "twin_softmax", "enabled": False},
                  "gelu": {"quantizer": "twin_gelu", "enabled": True}}
    (folder / "results.json").write_text(json.dumps(data))
    rec = report.build_report([d])["records"].iloc[0]
    assert (bool(rec["twin_softmax"]), bool(rec["twin_gelu"])) == (False, True)


def test_build_report_names_every_table_and_both_consumers_take_them(table1_sweep, tmp_path, monkeypatch):
    """`build_report` decides which tables a report has (`tables`): the csv writer writes each one with rows,
    the W&B upload logs the same set (nothing of its own)."""
    rep = report.build_report([table1_sweep])
    assert list(rep["tables"]) == [*report.TABLES, "cells", "runs", "failed", "unreadable"]
    assert len(rep["tables"]["failed"]) == 1 and not len(rep["tables"]["unreadable"])
    written = report.write_report(rep, tmp_path / "out", formats=["csv"])
    assert [p.stem for p in written] == [*report.TABLES, "cells", "runs", "failed"]
    import sys
    import types

    from ptq.loggers import wandb_report

    logged = {}
    run = types.SimpleNamespace(id="r", project="p", log=logged.update, finish=lambda: None)
    fake = types.SimpleNamespace(init=lambda **kw: run, Settings=lambda **kw: None,
                                 Table=lambda dataframe: dataframe)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "online")
    wandb_report.log_report(rep, [table1_sweep], out=tmp_path / "out")
    assert sorted(logged) == sorted(p.stem for p in written)


def test_one_run_cell_never_shows_a_spread(tmp_path):
    """A cell of one run shows its number with a dagger in every table (top-1, drop, agreement, KL), never
    `± 0.00`; cells.csv leaves its std empty and gives the Wilson interval on its test images, a cell of several
    runs the t interval (hand values: tests/test_intervals.py)."""
    d = tmp_path / "n1"
    write_job(d / "one", "fmnist_vit", "ptq4vit", 4, 88.0, max_test=1000)
    for seed, top1 in ((1, 89.5), (2, 89.7)):
        write_job(d / f"two{seed}", "fmnist_vit", "base_ptq", 4, top1, seed=seed, max_test=1000)
    for folder in d.iterdir():
        data = json.loads((folder / "results.json").read_text())
        data.update(agreement=data["top1"] + 5, kl_fp32=data["top1"] / 8800)
        (folder / "results.json").write_text(json.dumps(data))
    rep = report.build_report([d])
    for key in report.MEASURES:
        text = rows(rep[key])[0]["PTQ4ViT W4A4"]
        assert "±" not in text and text.endswith("†"), (key, text)
        assert "±" in rows(rep[key])[0]["BasePTQ W4A4"]
    assert rows(rep["kl"])[0]["PTQ4ViT W4A4"] == "0.0100†" and rows(rep["agreement"])[0]["PTQ4ViT W4A4"] == "93.00†"
    assert "N = 1,000 test images per run" in rep["table"].caption and "† = one run" in rep["table"].caption
    out = tmp_path / "out"
    assert report.main([str(d), "--out", str(out)]) == 0
    assert not re.search(r"± 0\.00(?!\d)", (out / "table.md").read_text())
    cells = report.pd.read_csv(out / "cells.csv").set_index("column")
    one, two = cells.loc["PTQ4ViT W4A4"], cells.loc["BasePTQ W4A4"]
    assert report.pd.isna(one["std"]) and report.pd.isna(one["drop_std"]) and one["n"] == 1
    assert one["ci95"] == "wilson" and (one["ci95_low"], one["ci95_high"]) == pytest.approx((85.8391, 89.8701),
                                                                                               abs=1e-3)
    assert two["ci95"] == "t" and (two["ci95_low"], two["ci95_high"]) == pytest.approx((88.32938, 90.87062),
                                                                                          abs=1e-4)
    assert report.pd.isna(cells.loc["FP32", "std"])


def _with_config(folder: Path, **groups) -> None:
    path = folder / "results.json"
    data = json.loads(path.read_text())
    for group, values in groups.items():
        data["config"].setdefault(group, {}).update(values)
    path.write_text(json.dumps(data))


def test_reconstruction_columns_read_as_papers_write_them(tmp_path):
    """`+ BRECQ (300 it, 1024 img)` from the run's recon config, never `name=brecq`; a recon setting that differs
    from its preset is named; no reconstruction: the method alone."""
    d = tmp_path / "recon"
    for name, top1, extra in (("none", 80.0, {}), ("brecq", 84.0, {"iters": 300, "n_images": 1024}),
                              ("qdrop", 85.0, {"iters": 300, "n_images": 1024, "drop_prob": 0.5}),
                              ("qdrop_lr", 83.0, {"iters": 100, "n_images": 256, "drop_prob": 0.5, "lr_step": 0.01})):
        folder = write_job(d / name, "fmnist_vit", "repq_vit", 4, top1, metric="hessian")
        _with_config(folder, recon={"name": name.split("_")[0], **extra})
    columns = list(report.build_report([d])["table"].display.columns)
    assert columns == ["model", "FP32", "RepQ-ViT W4A4", "RepQ-ViT W4A4 + BRECQ (300 it, 1024 img)",
                       "RepQ-ViT W4A4 + QDrop (300 it, 1024 img)",
                       "RepQ-ViT W4A4 + QDrop (100 it, 256 img, lr_step 0.01)"]
    assert not any("=" in c for c in columns)


def test_settings_table_names_first_last_and_fallback_slots(tmp_path):
    """The settings table beside the methods table: a head weight whose slot is off reads `= weight (4-bit)`;
    bits.first_last=8 puts the four first / last slots at 8 bits; calibration and reconstruction are named."""
    from omegaconf import OmegaConf

    from ptq.cli import compose_config

    d = tmp_path / "settings"
    for first_last, top1 in ((None, 80.0), (8, 82.0)):
        folder = write_job(d / f"fl{first_last}", "fmnist_vit", "repq_vit", 4, top1, metric="hessian")
        cfg = OmegaConf.to_container(compose_config(["quantizer=repq_vit", "bits=w4a4", "logger=none"]),
                                     resolve=True)
        cfg["bits"]["first_last"] = first_last
        data = json.loads((folder / "results.json").read_text())
        data["config"] = cfg
        (folder / "results.json").write_text(json.dumps(data))
    rep = report.build_report([d])
    settings = {r["column"]: r for r in rows(rep["settings"])}
    off, on = settings["RepQ-ViT W4A4"], settings["RepQ-ViT W4A4 8-bit first/last"]
    assert list(rep["table"].display.columns) == ["model", "FP32", "RepQ-ViT W4A4", "RepQ-ViT W4A4 8-bit first/last"]
    assert off["head weight"] == "= weight (4-bit)" and off["first/last"].startswith("off")
    assert off["weights"] == "uniform_asym channel 4-bit" and off["image"] == "uniform_asym tensor 8-bit"
    assert on["head weight"] == "= weight (8-bit)" and on["patch-embed weight"] == "= weight (8-bit)"
    assert on["head input"] == "= input (8-bit)" and on["first/last"] == "8-bit"
    assert on["weights"] == "uniform_asym channel 4-bit" and on["calibration"] == "32 img, eval transform"
    assert on["reconstruction"] == "none"


def test_compensation_columns_labels_and_costs(tmp_path):
    """compensate=qwt runs are their own columns, `RepQ-ViT W4A4 + QwT`, the official form `+ QwT (official)`,
    ERQ `+ ERQ` (its preset's other image settings are not worded); the settings table says what each compensation
    was and what it cost (parameters / MACs per image per run, seconds mean ± std: 1 and 3 s -> 2.0 ± 1.4);
    runs.csv has the costs, 0 for the runs without compensation. A report without compensation has none of it."""
    d = tmp_path / "comp"
    write_compensated_job(d / "n0", "none", 0, 80.0)
    write_compensated_job(d / "n1", "none", 1, 81.0)
    write_compensated_job(d / "q0", "qwt", 0, 82.0, qwt_record("paper", True, 1.0), compat="paper", n_images=512)
    write_compensated_job(d / "q1", "qwt", 1, 84.0, qwt_record("paper", False, 3.0), compat="paper", n_images=512)
    write_compensated_job(d / "o0", "qwt", 0, 83.0, qwt_record("official", True, 2.0), compat="official",
                     n_images=512)
    erq = {"name": "erq", "compat": "paper", "images": 32, "inputs": "quantized_stream", "coe": 20000.0,
           "solver": "solve64", "kept": 2, "added_params": 0, "added_macs_per_image": 0, "seconds": 0.5,
           "blocks": [], "layers": [{"layer": "blocks.0.attn.qkv"}, {"layer": "blocks.0.attn.proj"}]}
    write_compensated_job(d / "e0", "erq", 0, 81.5, erq, compat="paper", n_images=32, distinct=False,
                     augmentation="none")
    rep = report.build_report([d])
    # none 80, 81 -> 80.50 ± 0.71; qwt 82, 84 -> 83.00 ± 1.41
    assert rows(rep["table"]) == [{"model": "fmnist_vit", "FP32": "90.00", "RepQ-ViT W4A4": "80.50 ± 0.71",
                                   "RepQ-ViT W4A4 + QwT": "83.00 ± 1.41", "RepQ-ViT W4A4 + QwT (official)": "83.00†",
                                   "RepQ-ViT W4A4 + ERQ": "81.50†"}]
    cost = ["compensation", "maps kept", "params added", "MACs/image added", "compensation s"]
    settings = {r["column"]: [r[c] for c in cost] for r in rows(rep["settings"])}
    assert settings == {
        "RepQ-ViT W4A4": ["none", "—", "0", "0", "0"],
        "RepQ-ViT W4A4 + QwT": ["QwT paper: 512 img (none), ridge 0.001, solve64, fp16 side path", "1 of 1 / 0 of 1",
                                "9,312 / 0", "465,600 / 0", "2.0 ± 1.4"],
        "RepQ-ViT W4A4 + QwT (official)": ["QwT official: 512 img (train), ridge 0.0, inverse32, fp16 side path",
                                           "1 of 1", "9,312", "465,600", "2.0"],
        "RepQ-ViT W4A4 + ERQ": ["ERQ paper: 32 img, quantized_stream inputs, coe 20000.0, solve64",
                                "2 layers edited", "0", "0", "0.5"]}
    runs = rep["tables"]["runs"].set_index("path")
    assert runs.loc["n0", ["compensate", "added_params", "added_macs_per_image", "compensate_seconds"]].tolist() \
        == ["none", 0, 0, 0]
    assert runs.loc["q1", ["compensate", "compensate_compat", "compensate_kept", "added_params"]].tolist() \
        == ["qwt", "paper", 0, 0]
    assert runs.loc["o0", ["compensate_compat", "added_params", "added_macs_per_image", "compensate_seconds"]
                    ].tolist() == ["official", 9312, 465600, 2.0]
    assert report.compensate_label({"compensate.name": "qwt", "compensate.compat": "paper",
                                    "compensate.ridge": 0.0}) == "+ QwT (ridge 0.0)"   # not the preset's null
    assert report.compensate_label({"compensate.name": "none"}) == ""
    plain = report.build_report([d / "n0", d / "n1"])
    assert "compensation" not in plain["settings"].display and "added_params" not in plain["tables"]["runs"]
