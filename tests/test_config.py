"""Every YAML under conf/ composes: each option of each group, each experiment, each launcher, the train config."""
from __future__ import annotations

import pytest
from conftest import CONF_DIR
from omegaconf import OmegaConf

GROUPS = ("model", "data", "quantizer", "metric", "bits", "calib", "logger")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml"))


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


def test_default_config(compose):
    cfg = compose([])
    for group in GROUPS:
        assert group in cfg, group
    assert cfg.model.name == "fmnist_vit" and cfg.data.name == "fmnist" and cfg.quantizer.name == "ptq4vit"
    assert (cfg.bits.w, cfg.bits.a) == (6, 6)
    assert (cfg.calib.n_images, cfg.calib.seed, cfg.calib.mode) == (32, 3, "parallel")
    assert cfg.logger.name == "wandb"
    assert "experiment" not in cfg  # experiment: null in the defaults list


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_group_option_composes(compose, group, option):
    cfg = compose([f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group == "model":
        assert set(cfg.model) >= {"name", "kwargs", "pretrained", "checkpoint"}
    if group == "bits":
        assert f"w{cfg.bits.w}a{cfg.bits.a}" == option
    if group in ("metric", "logger", "data"):
        assert cfg[group].name == option
    if group == "quantizer":
        assert cfg.quantizer.name == option


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(compose, name):
    cfg = compose([f"experiment={name}"], hydra_config=True)
    OmegaConf.to_container(cfg, resolve=False)
    assert cfg.model.name and cfg.quantizer.name


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_composes(compose, name):
    cfg = compose([f"hydra/launcher={name}"], hydra_config=True)
    assert cfg.hydra.launcher._target_


@pytest.mark.parametrize("model", ["fmnist_vit", "fmnist_swin"])
def test_train_config_composes(compose, model):
    cfg = compose([f"model={model}"], config_name="train")
    assert cfg.train.out == f"checkpoints/{model}.safetensors" and cfg.model.name == model


def test_any_bit_width_and_calibration(compose):
    cfg = compose(["bits.w=5", "bits.a=7", "calib.n_images=64", "calib.seed=0", "calib.mode=sequential"])
    assert (cfg.bits.w, cfg.bits.a, cfg.calib.n_images, cfg.calib.seed, cfg.calib.mode) == (5, 7, 64, 0, "sequential")


def test_model_kwargs_override(compose):
    cfg = compose(["model.kwargs.embed_dim=64", "model.kwargs.depth=2", "+model.kwargs.mlp_ratio=2.0"])
    assert dict(cfg.model.kwargs) == {"embed_dim": 64, "depth": 2, "num_heads": 3, "mlp_ratio": 2.0}


@pytest.mark.parametrize("env,mode", [(None, "offline"), ("disabled", "disabled"), ("online", "online")])
def test_wandb_mode_from_environment(compose, monkeypatch, env, mode):
    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    assert compose(["logger=wandb"]).logger.mode == mode
