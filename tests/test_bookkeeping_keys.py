"""The job-control keys (ptq.results_file.BOOKKEEPING_KEYS: settings that cannot change a number) are one list with
one meaning everywhere: no job identity holds them, Hydra's folder names leave them out, resume ignores them, and
the report's longer list of keys a column label leaves out starts from them."""
from __future__ import annotations

import pytest
import yaml
from conftest import CONF_DIR
from omegaconf import OmegaConf

from ptq.cli import compose_config
from ptq.job_identity import job_identity
from ptq.report import LABEL_IGNORED_KEYS
from ptq.results_file import BOOKKEEPING_KEYS, flat_config


@pytest.mark.parametrize("overrides", [("quantizer=fp32",), ("quantizer=ptq4vit",),
                                       ("quantizer=repq_vit", "recon=brecq"), ("quantizer=adalog", "compensate=qwt")],
                         ids=lambda o: "-".join(o))
def test_no_job_identity_holds_a_bookkeeping_key(overrides):
    cfg = compose_config(["logger=none", "threads=1", "force=true", "progress=false", *overrides])
    config = OmegaConf.to_container(cfg, resolve=True)
    assert set(BOOKKEEPING_KEYS) <= set(config)   # present in the job's config ...
    identity = flat_config(job_identity(config))
    assert not [k for k in identity if k.split(".")[0] in BOOKKEEPING_KEYS]   # ... and in no identity
    assert "device" in identity and "eval.batch_size" in identity   # compared by resume, unlike the label list


def test_folder_names_and_report_labels_leave_them_out():
    excluded = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["hydra"]["job"]["config"]["override_dirname"]
    assert set(BOOKKEEPING_KEYS) <= set(excluded["exclude_keys"])
    assert LABEL_IGNORED_KEYS[:len(BOOKKEEPING_KEYS)] == BOOKKEEPING_KEYS
