"""The core keeps choosing the same parameters: each case of tests/regression/make_params.py calibrates again and
must reproduce the committed parameter file bit for bit, and the same top-1 and agreement (first 1000 test
images). The committed files were written by the code before the config refactor of issue 9."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import ROOT

from tests.regression import make_params

REGRESSION = ROOT / "tests" / "regression"


@pytest.mark.parametrize("case", list(make_params.CASES))
def test_same_parameters_as_before(tmp_path, case):
    from safetensors.torch import load_file

    results = make_params.run_case(make_params.CASES[case], tmp_path)
    new = load_file(str(tmp_path / "quant_params.safetensors"))
    old = load_file(str(REGRESSION / f"{case}.safetensors"))
    assert set(new) == set(old)
    changed = [k for k in old if not torch.equal(new[k], old[k])]
    assert not changed, changed[:5]
    ref = json.loads((REGRESSION / f"{case}.json").read_text())
    assert (results["top1"], results["agreement"]) == (ref["top1"], ref["agreement"])
