"""Each method carries its own names (ptq/methods/<preset>.yaml: label, report position, published numbers), read
by ptq.report and ptq.reference_results; a new method adds a file there and edits neither."""
from __future__ import annotations

import shutil

import pytest
from conftest import ROOT

from ptq import methods as names
from ptq.errors import PTQError


@pytest.fixture
def methods_dir(tmp_path, monkeypatch):
    """A copy of ptq/methods/ that a test may add files to (the lookups read it afresh)."""
    folder = tmp_path / "methods"
    shutil.copytree(names.METHODS_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(names, "METHODS_DIR", folder)
    names.methods.cache_clear()
    yield folder
    names.methods.cache_clear()


def test_every_method_file_names_a_preset_and_labels_are_unique():
    presets = {p.stem for p in (ROOT / "conf" / "quantizer").glob("*.yaml")}
    found = names.methods()
    assert set(found) <= presets and {"fp32", "base_ptq", "ptq4vit", "repq_vit", "adalog"} <= set(found)
    labels = [m.label for m in found.values()]
    assert len(set(labels)) == len(labels) and len({m.order for m in found.values()}) == len(found)


def test_report_reads_the_labels_from_the_files():
    from ptq import report

    assert report.METHOD_LABELS == names.method_labels()
    assert list(report.METHOD_LABELS)[0] == "fp32"  # the float model leads every table
    assert report.method_label("ptq4vit_log2") == "ptq4vit_log2"  # a preset without a file: its name


def test_a_new_method_file_gives_its_label_order_and_numbers(methods_dir):
    from ptq.reference_results import table1_reference

    (methods_dir / "my_method.yaml").write_text(
        "label: MyMethod\norder: 2.5\nreference:\n  source: my paper, table 2\n"
        "  top1:\n    deit_small_patch16_224: {W4A4: 71.25}\n")
    labels = names.method_labels()
    assert labels["my_method"] == "MyMethod"
    assert list(labels).index("my_method") == list(labels).index("ptq4vit") + 1  # between order 2 and 3
    assert table1_reference("deit_small_patch16_224.fb_in1k", "MyMethod", "W4A4") == 71.25
    assert table1_reference("deit_small_patch16_224", "MyMethod", "W6A6") is None


def test_a_misspelt_key_in_a_method_file_is_an_error(methods_dir):
    (methods_dir / "my_method.yaml").write_text("label: MyMethod\nrefrence: {}\n")
    with pytest.raises(PTQError, match="unknown key refrence; valid: label, order, reference"):
        names.methods()
