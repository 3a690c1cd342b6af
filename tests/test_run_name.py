"""Single-run folders name the metric when not the method's, the reconstruction when not none (ptq/run_name.py)."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from ptq.cli import compose_config
from ptq.run_name import preset_metric, run_variant


def test_preset_metric_from_the_presets():
    assert preset_metric("base_ptq") == "cosine"  # conf/quantizer/base_ptq.yaml: override /metric: cosine
    assert preset_metric("ptq4vit") == "hessian"  # no override: conf/config.yaml's default


@pytest.mark.parametrize("overrides, leaf", [
    (["quantizer=base_ptq"], "base_ptq_w4a4"),
    (["quantizer=base_ptq", "metric=hessian"], "base_ptq_w4a4_hessian"),
    (["quantizer=ptq4vit", "recon=brecq"], "ptq4vit_w4a4_brecq"),
    (["quantizer=base_ptq", "metric=mse", "recon=qdrop", "bits.first_last=8"], "base_ptq_w4a4_mse_qdrop_fl8"),
])
def test_run_dir_names_what_differs_from_the_preset(overrides, leaf):
    cfg = compose_config(["logger=none", "bits=w4a4", *overrides], hydra_config=True)
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    assert run_dir.split("/")[-2] == leaf


def test_fp32_names_no_metric():
    assert run_variant("fp32", "cosine", "none") == ""
