"""ptq.report on synthetic results.json files whose tables are worked out by hand."""
from __future__ import annotations

from pathlib import Path

import pytest

from ptq import report
from ptq.reference_results import TABLE1, ablation_reference, table1_reference
from tests.results_factory import write_job

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
        {"model": "fmnist_vit", "FP32": "90.00", "BasePTQ W8A8": "89.00", "BasePTQ W6A6": "80.00",
         "PTQ4ViT W8A8": "89.60 ± 0.14", "PTQ4ViT W6A6": "85.00"},
        {"model": "vit_small_patch16_224", "FP32": "81.40 [81.39]", "BasePTQ W8A8": "[80.47]",
         "BasePTQ W6A6": "[70.24]", "PTQ4ViT W8A8": "[81.00]", "PTQ4ViT W6A6": "78.00 [78.63]"}]  # [reference]
    # drop = fp32 - top1; reference drop 81.39 - 78.63 = 2.76
    assert rows(rep["drop"]) == [
        {"model": "fmnist_vit", "BasePTQ W8A8": "1.00", "BasePTQ W6A6": "10.00", "PTQ4ViT W8A8": "0.40 ± 0.14",
         "PTQ4ViT W6A6": "5.00"},
        {"model": "vit_small_patch16_224", "BasePTQ W8A8": "[0.92]", "BasePTQ W6A6": "[11.15]",
         "PTQ4ViT W8A8": "[0.39]", "PTQ4ViT W6A6": "3.40 [2.76]"}]
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
    assert names == ["cells.csv", "drop.csv", "drop.md", "drop.tex", "failed.csv", "runs.csv", "table.csv",
                     "table.md", "table.tex"]
    tex = (out / "table.tex").read_text()
    assert r"89.60 $\pm$ 0.14" in tex and r"vit\_small\_patch16\_224" in tex
    csv = (out / "table.csv").read_text().splitlines()
    assert csv[0] == "model,FP32,BasePTQ W8A8,BasePTQ W6A6,PTQ4ViT W8A8,PTQ4ViT W6A6"
    assert report.main([str(table1_sweep), "--out", str(tmp_path / "md"), "--format", "md"]) == 0
    assert sorted(p.name for p in (tmp_path / "md").iterdir()) == ["drop.md", "table.md"]
    assert report.main([str(table1_sweep), "--format", "pdf"]) == 2
    assert report.main([str(tmp_path / "missing")]) == 2


def test_mixed_cell_is_flagged(tmp_path):
    d = tmp_path / "mixed"
    write_job(d / "a", "fmnist_vit", "ptq4vit", 8, 88.0, max_test=100)
    write_job(d / "b", "fmnist_vit", "ptq4vit", 8, 86.0, max_test=500)
    table = report.build_report([d])["table"]
    assert rows(table)[0]["PTQ4ViT W8A8"] == "87.00 ± 1.41"
    assert len(table.notes) == 1 and "data.max_test" in table.notes[0]


def test_varying_setting_becomes_a_column(tmp_path):
    d = tmp_path / "calib_size"
    for n, top1 in ((128, 86.0), (32, 84.0)):
        write_job(d / f"n{n}", "fmnist_vit", "ptq4vit", 6, top1, n_images=n)
    rep = report.build_report([d])
    assert rep["layout"] == "main"
    assert rows(rep["table"]) == [{"model": "fmnist_vit", "FP32": "90.00", "PTQ4ViT W6A6 n=32": "84.00",
                                   "PTQ4ViT W6A6 n=128": "86.00"}]


def test_compat_sweep_stays_in_main_layout(tmp_path):
    d = tmp_path / "compat"
    write_job(d / "p", "fmnist_vit", "ptq4vit", 6, 85.0, compat="paper")
    write_job(d / "o", "fmnist_vit", "ptq4vit", 6, 83.0, compat="official")  # grad kl_self by default
    rep = report.build_report([d])
    assert rep["layout"] == "main"
    assert list(rep["table"].display.columns) == ["model", "FP32", "PTQ4ViT W6A6 paper g=pseudo_ce",
                                                  "PTQ4ViT W6A6 official g=kl_self"]


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
    assert got == [("", "", "", "88.00", "86.00"), ("✓", "", "", "89.00", "87.00"),
                   ("✓", "✓", "", "91.00", "89.00"), ("✓", "", "✓", "93.00", "91.00"),
                   ("", "✓", "✓", "94.00", "92.00"), ("✓", "✓", "✓", "95.00", "93.00"),  # the spec's six rows
                   ("", "", "✓", "92.00", "90.00"), ("", "✓", "", "90.00", "88.00")]  # then the other two
    last = rows(rep["table"])[5]
    assert last["vit_base_patch16_384 W6A6"] == "83.00 [83.19]"
    assert rows(rep["table"])[0]["vit_base_patch16_384 W6A6"] == "[46.89]"  # reference beside a missing run
    assert rows(rep["drop"])[5]["vit_base_patch16_384 W6A6"] == "3.00 [2.81]"  # 86.00 - 83.19
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
    assert rows(rep["table"]) == [{"metric": "mse", "grad": "—", "fmnist_vit W4A4": "70.00"},
                                  {"metric": "cosine", "grad": "—", "fmnist_vit W4A4": "75.00"},
                                  {"metric": "hessian", "grad": "kl_self", "fmnist_vit W4A4": "72.00"},
                                  {"metric": "hessian", "grad": "fisher", "fmnist_vit W4A4": "81.00"}]


@pytest.mark.parametrize("content", ["{not json", "null", "[]", '{"status": "ok"}', '{"status": "done"}',
                                     '{"status": "ok", "schema_version": 99}'])
def test_unreadable_results_are_skipped_and_listed(tmp_path, capsys, content):
    d = tmp_path / "broken"
    write_job(d / "ok", "fmnist_vit", "ptq4vit", 8, 88.0)
    (d / "bad").mkdir()
    (d / "bad" / "results.json").write_text(content)
    rep = report.build_report([d])
    assert rows(rep["table"])[0]["PTQ4ViT W8A8"] == "88.00"
    assert len(rep["records"]) == 1 and len(rep["failed"]) == 0
    (line,) = rep["unreadable"]
    assert line.startswith(str(d / "bad" / "results.json"))
    assert report.main([str(d)]) == 0
    assert "### Skipped files (1" in capsys.readouterr().out


def test_report_on_folder_without_valid_results_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "stray" / "job").mkdir(parents=True)
    (tmp_path / "stray" / "job" / "results.json").write_text("null")
    for folder, expected in (("empty", "no valid results.json"), ("stray", "1 unreadable")):
        assert report.main([str(tmp_path / folder)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and expected in err


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
