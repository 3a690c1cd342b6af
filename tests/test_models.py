"""Model creation for the test-bed names and checkpoint round-trips / rejections in ptq.models.checkpoint."""
from __future__ import annotations

import pytest
import torch
from conftest import bad_checkpoint, mcfg

from ptq.errors import PTQError
from ptq.models import TESTBED_MODELS, build_model, known_models
from ptq.models.checkpoint import read_state_dict, save_state_dict


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return build_model(mcfg())


@pytest.mark.parametrize("name", TESTBED_MODELS)
def test_testbed_models(compose, name):
    assert name in known_models()
    model = build_model(compose([f"model={name}", "model.checkpoint=null"]).model)
    assert not model.training
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.pretrained_cfg["input_size"] == (1, 28, 28)


def test_model_kwargs_reach_timm():
    model = build_model(mcfg(embed_dim=48, depth=2, num_heads=2))
    assert len(model.blocks) == 2 and model.embed_dim == 48 and model.blocks[0].attn.num_heads == 2
    swin = build_model(mcfg("fmnist_swin", depths=[2, 2], num_heads=[3, 6], embed_dim=24))
    assert swin(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def _same(a, b):
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "pth_nested", "pth_ddp"])
def test_checkpoint_round_trip(tmp_path, vit, fmt):
    sd = vit.state_dict()
    if fmt == "safetensors":
        path = tmp_path / "m.safetensors"
        save_state_dict(vit, path, metadata={"model": "fmnist_vit"})
    else:
        path = tmp_path / "m.pth"
        obj = {"pth": sd, "pth_nested": {"model": sd, "epoch": 3}, "pth_ddp": {f"module.{k}": v for k, v in sd.items()}}
        torch.save(obj[fmt], path)
    assert set(read_state_dict(path)) == set(sd)
    assert _same(vit, build_model(mcfg(checkpoint=str(path))))


BAD = {
    "shapes": r"does not match the model: shape mismatch: cls_token \(1, 1, 48\) vs model \(1, 1, 96\)",
    "keys": r"does not match the model: missing keys: blocks\.2\.norm1\.weight",
    "list": r"is not a state dict .*found list",
    "random_pth": r"cannot be read as a state dict",
    "random_safetensors": r"cannot be read as a state dict",
    "module": r"cannot be read as a state dict",
    "nan": r"NaN/Inf values in 'blocks\.1\.mlp\.fc1\.weight'",
}


@pytest.mark.parametrize("case", BAD)
def test_bad_checkpoint(tmp_path, vit, case):
    path = bad_checkpoint(tmp_path, vit, case)
    with pytest.raises(PTQError, match=BAD[case]) as err:
        build_model(mcfg(checkpoint=str(path)))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_checkpoint_file():
    with pytest.raises(PTQError, match="does not exist"):
        build_model(mcfg(checkpoint="/nonexistent/model.safetensors"))


@pytest.mark.parametrize("name", ["foo_bar", "resnet50"])
def test_unknown_model_name(name):
    with pytest.raises(PTQError, match=rf"unknown model '{name}'; valid: timm ViT/DeiT/Swin names .*vit"):
        build_model(mcfg(name))


@pytest.mark.parametrize("kwargs,match", [({"bogus": 1}, "bogus"), ({"embed_dim": 64}, "divisible by num_heads")])
def test_bad_kwargs(kwargs, match):
    with pytest.raises(PTQError, match=match):
        build_model(mcfg(**kwargs))
