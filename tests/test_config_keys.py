"""Typed groups refuse unknown keys, with `+` as without (Hydra's `+` would add them to a dataclass node and the
job would run with the setting unused); only the free-form dictionaries take new keys. Checked on the command
line (single runs) and by every job (each job of a multirun)."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError
from test_cli import assert_one_line_error, run_in_process

from ptq.cli import _unknown_key_message, check_overrides, compose_config, group_options
from ptq.config_keys import check_known_keys, free_form_keys, schema_fields, unwrap_optional
from ptq.errors import PTQError
from ptq.schema import Config, TrainConfig
from ptq.validation import validate_config


def typed_levels(schema: type = Config, prefix: str = ""):
    """(path, dataclass) of every typed node of the schema ("" = the root), walked from the dataclasses."""
    yield prefix.rstrip("."), schema
    for name, hint in schema_fields(schema).items():
        if dataclasses.is_dataclass(unwrap_optional(hint)):
            yield from typed_levels(unwrap_optional(hint), f"{prefix}{name}.")


LEVELS = dict(typed_levels())


def test_levels_cover_every_group():
    assert {"", "model", "model.outliers", "data", "metric", "bits", "calib", "quantizer", "quantizer.slots",
            "quantizer.slots.softmax", "quantizer.search", "recon", "logger", "eval"} <= set(LEVELS)
    assert free_form_keys(Config)[:2] == ["model.kwargs", "data.transform"]
    assert {f"quantizer.slots.{s}.options" for s in ("weight", "softmax")} <= set(free_form_keys(Config))


def _one_line(capsys, overrides: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        check_overrides(overrides)
    err = capsys.readouterr().err
    assert_one_line_error(e.value.code, err)
    assert e.value.code == 2
    return err


@pytest.fixture(scope="module")
def composed():
    return compose_config(["logger=none"], hydra_config=True)


@pytest.mark.parametrize("plus", [True, False], ids=["plus", "no_plus"])
@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv or "root")
def test_unknown_key_refused_at_every_typed_level(level, plus, composed):
    """`+key=1` is Hydra's OmegaConf.update(force_add=True) on the composed config: the job's check refuses it;
    `key=1` Hydra refuses itself, and the command line's message lists the same valid keys."""
    key = f"{level}.bogus_key" if level else "bogus_key"
    valid = ", ".join(sorted(schema_fields(LEVELS[level])))
    where = f"valid keys of {level}:" if level else "valid top-level keys:"
    cfg = copy.deepcopy(composed)
    if plus:
        OmegaConf.update(cfg, key, 1, force_add=True)
        with pytest.raises(PTQError) as e:
            check_known_keys(cfg)
        message = str(e.value)
    else:
        with pytest.raises((ConfigKeyError, ConfigAttributeError)):
            OmegaConf.update(cfg, key, 1)
        message = _unknown_key_message(key, f"{key}=1", [])
    assert f"'{key}'" in message and f"{where} {valid} (typed groups take no new keys" in message


def test_no_plus_typo_on_the_command_line(capsys):
    err = _one_line(capsys, ["quantizer.slots.softmax.bogus_key=1"])
    assert "'quantizer.slots.softmax.bogus_key'" in err and "valid keys of quantizer.slots.softmax: bits" in err


@pytest.mark.parametrize("override,key,valid", [
    ("+calib.n_image=64", "calib.n_image", "n_images"),
    ("+quantizer.bogus_key=1", "quantizer.bogus_key", "recipe"),
    ("+bogus=1", "bogus", "seed"),
])
def test_issue_examples_refused(override, key, valid, capsys):
    err = _one_line(capsys, ["logger=none", override])
    assert f"unknown config key '{key}'" in err and valid in err and "typed groups take no new keys" in err
    cfg = compose_config(["logger=none", override])  # the job's own check (multiruns skip the command line's)
    with pytest.raises(PTQError, match=f"'{key}'"):
        validate_config(cfg)


@pytest.mark.parametrize("override", ["+model.kwargs.mlp_ratio=2.0", "+quantizer.slots.softmax.options.m_max=3",
                                      "+data.transform.crop_pct=0.9"])
def test_free_form_dictionaries_take_new_keys(override, capsys):
    check_overrides(["logger=none", override])
    check_known_keys(compose_config([override]))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("group", ["quantizer", "recon", "experiment"])
def test_every_shipped_option_composes_clean(group):
    for option in group_options(group):
        check_known_keys(compose_config([f"{group}={option}"], hydra_config=True))


def test_train_config_refuses_unknown_key():
    check_known_keys(compose_config(["+model.kwargs.mlp_ratio=2.0"], config_name="train"), TrainConfig)
    with pytest.raises(PTQError, match="'train.epoch'.*valid keys of train: .*epochs"):
        check_known_keys(compose_config(["+train.epoch=3"], config_name="train"), TrainConfig)


def test_multirun_job_refuses_typo(tmp_path, monkeypatch, capsys):
    """-m skips the command-line check: the job itself refuses, is recorded as failed, the summary says so."""
    sweep = tmp_path / "sweep"
    code, _, err = run_in_process(["-m", "quantizer=fp32", "+calib.n_image=64", "logger=none", "progress=false",
                                   f"hydra.sweep.dir={sweep}"], monkeypatch, capsys)
    assert code == 3, err
    assert f"multirun {sweep}: 1 jobs, 0 ok, 1 failed" in err
    (record,) = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert record["status"] == "failed" and "'calib.n_image'" in record["error"] and "n_images" in record["error"]
    assert not list(sweep.glob("*/quant_params.safetensors"))


def test_single_run_refuses_typo_and_writes_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = run_in_process(["quantizer=fp32", "+quantizer.bogus_key=1", "logger=none",
                                   f"hydra.run.dir={out}"], monkeypatch, capsys)
    assert_one_line_error(code, err, "unknown config key 'quantizer.bogus_key'", "valid keys of quantizer:")
    assert code == 2 and not out.exists()


def test_choice_fields_of_the_schema_are_validated_from_their_one_list(composed):
    """A field declared with ptq.schema.choice gets its rule from that list (calib.mode, calib.transform, ...)."""
    from ptq.schema import CALIB_MODES, CALIB_TRANSFORMS
    from ptq.validation import schema_choice_rules

    rules = {r.key: r.choices for r in schema_choice_rules()}
    assert rules["calib.mode"] is CALIB_MODES and rules["calib.transform"] is CALIB_TRANSFORMS
    for key, choices in rules.items():
        cfg = copy.deepcopy(composed)
        OmegaConf.update(cfg, key, "bogus_choice")
        with pytest.raises(PTQError, match=f"{key}=bogus_choice is not a valid choice; valid: {', '.join(choices)}"):
            validate_config(cfg)
