"""The outlier transform of the stress test-beds (ptq/models/outliers.py): exact on the float model, the post-LayerNorm
channel ranges change by exactly the drawn factors, bad values give one-line errors, the profiles compose."""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from omegaconf import OmegaConf

import ptq.models.testbed  # noqa: F401  (registers the test-bed models)
from ptq.errors import PTQError
from ptq.models import build_model
from ptq.models.activation_ranges import measure, range_ratio
from ptq.models.outliers import OutliersConfig, apply_outliers, draw_factors, norm_linear_pairs, outliers_config

SEVERE = {"profile": "severe", "fraction": 0.1, "law": "pareto", "low": 12.0, "high": 40.0, "shape": 1.5,
          "norms": ["norm1", "norm2", "merge"], "seed": 1}
# random-init timm models, reduced so they run in a second: name -> (kwargs, input size)
TIMM_SMALL = {
    "vit_tiny_patch16_224": ({"img_size": 32, "patch_size": 8, "depth": 2}, 32),
    "deit_tiny_patch16_224": ({"img_size": 32, "patch_size": 8, "depth": 2}, 32),
    "swin_tiny_patch4_window7_224": ({"img_size": 56, "embed_dim": 24, "depths": (2, 2), "num_heads": (2, 4)}, 56),
}


def _testbed(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    mcfg = OmegaConf.load(f"conf/model/{name}.yaml")
    torch.manual_seed(0)
    return build_model(mcfg), torch.randn(16, 1, 28, 28)


def _timm(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    kwargs, size = TIMM_SMALL[name]
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **kwargs).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines (timm initializes them to 1 / 0)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return model, torch.randn(8, 3, size, size)


def _post_norm_ranges(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-channel max - min of every LayerNorm output (independent of ptq.models.activation_ranges)."""
    out, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.LayerNorm):
            hooks.append(m.register_forward_hook(
                lambda _m, _i, y, name=name: out.__setitem__(name, y.detach().reshape(-1, y.shape[-1]).numpy())))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return {n: v.max(0) - v.min(0) for n, v in out.items()}


MODELS = [("fmnist_vit", _testbed), ("fmnist_swin", _testbed)] + [(n, _timm) for n in TIMM_SMALL]


@pytest.mark.parametrize("name,make", MODELS, ids=[n for n, _ in MODELS])
def test_float_logits_unchanged(name, make):
    model, x = make(name)
    with torch.no_grad():
        ref = model(x)
        factors = apply_outliers(model, SEVERE)
        out = model(x)
    assert factors and max(float(k.max()) for k in factors.values()) > 12
    rel = float((out - ref).abs().max() / ref.abs().max())
    assert rel < 1e-5, rel
    assert torch.equal(out.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize("name,make", MODELS, ids=[n for n, _ in MODELS])
def test_ranges_scale_by_factors(name, make):
    model, x = make(name)
    before = _post_norm_ranges(model, x)
    factors = apply_outliers(model, SEVERE)
    after = _post_norm_ranges(model, x)
    kinds = {kind for kind, *_ in norm_linear_pairs(model)}
    assert {"norm1", "norm2"} <= kinds and ("merge" in kinds) == ("swin" in name)
    assert set(factors) == {n for _, n, *_ in norm_linear_pairs(model)}
    for norm, k in factors.items():
        np.testing.assert_allclose(after[norm], before[norm] * k.numpy(), rtol=1e-4, atol=1e-6)
        chosen = int((k != 1).sum())
        assert chosen == max(1, round(0.1 * k.numel()))
        assert float(k[k != 1].min()) >= 12 and float(k.max()) <= 40
    untouched = set(before) - set(factors)  # e.g. the final norm before the head
    for norm in untouched:
        np.testing.assert_allclose(after[norm], before[norm], rtol=1e-5, atol=1e-6)


def test_measure_matches_independent_ranges():
    model, x = _testbed("fmnist_swin")
    apply_outliers(model, SEVERE)
    stats = measure(model, x, batch_size=5)
    ref = _post_norm_ranges(model, x)
    for norm, r in stats.ranges().items():
        np.testing.assert_allclose(r.numpy(), ref[norm], rtol=1e-5, atol=1e-6)
        assert math.isclose(range_ratio(r), ref[norm].max() / np.median(ref[norm]), rel_tol=1e-5)
    assert stats.softmax and stats.gelu
    for probs in stats.softmax.values():
        assert float(probs.min()) >= 0 and float(probs.max()) <= 1


def test_factor_laws():
    lu = draw_factors(OutliersConfig(profile="custom", fraction=0.5, low=2.0, high=8.0), 4000, 0)
    chosen = lu[lu != 1].log().numpy()
    assert len(chosen) == 2000 and chosen.min() >= math.log(2) and chosen.max() <= math.log(8)
    assert abs(chosen.mean() - math.log(4)) < 0.05  # log-uniform: mean of log k = mean of the log bounds
    pa = draw_factors(OutliersConfig(profile="custom", fraction=1.0, law="pareto", low=2.0, high=1e9, shape=2.0),
                      20000, 3)
    # Pareto tail: P(k > 4) = (2 / 4) ** 2 = 0.25
    assert abs(float((pa > 4).double().mean()) - 0.25) < 0.015
    assert torch.equal(draw_factors(OutliersConfig(profile="custom", fraction=0.2, high=3.0), 96, 5),
                       draw_factors(OutliersConfig(profile="custom", fraction=0.2, high=3.0), 96, 5))


def test_profile_none_leaves_weights_alone():
    model, _ = _testbed("fmnist_vit")
    state = copy.deepcopy(model.state_dict())
    assert apply_outliers(model, OutliersConfig()) == {}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("bad,words", [
    ({"profile": "huge"}, "model.outliers.profile 'huge'"),
    ({"law": "cauchy"}, "model.outliers.law 'cauchy'"),
    ({"fraction": 1.5}, "model.outliers.fraction=1.5"),
    ({"low": 5.0, "high": 2.0}, "model.outliers.low=5.0"),
    ({"low": -1.0}, "model.outliers.low=-1.0"),
    ({"norms": ["norm3"]}, "'norm3'"),
    ({"factor": 3}, "model.outliers.factor"),
])
def test_bad_values_one_line_error(bad, words):
    with pytest.raises(PTQError) as e:
        outliers_config(dict(SEVERE, **bad))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_build_model_rejects_bad_profile(compose):
    cfg = compose(["model/outliers=mild", "model.outliers.fraction=2"])
    with pytest.raises(PTQError, match="fraction=2"):
        build_model(cfg.model)


def test_profiles_compose_and_apply(compose):
    assert compose([]).model.outliers.profile == "none"
    for profile in ("mild", "deit_like", "severe"):
        cfg = compose([f"model/outliers={profile}", "model=fmnist_swin"])
        assert cfg.model.outliers.profile == profile and cfg.model.name == "fmnist_swin"
        assert outliers_config(cfg.model.outliers).high > 1
    plain = build_model(compose([]).model)
    stressed = build_model(compose(["model/outliers=deit_like"]).model)
    ratio = stressed.blocks[0].norm1.weight / plain.blocks[0].norm1.weight
    k = draw_factors(outliers_config(compose(["model/outliers=deit_like"]).model.outliers), 96, 0)
    torch.testing.assert_close(ratio, k.float(), rtol=1e-6, atol=0)


def test_report_rows_per_profile(tmp_path):
    import json

    from ptq.report import build_report
    from tests.results_factory import write_job

    for profile, top1 in (("none", 80.0), ("severe", 40.0)):
        path = write_job(tmp_path / profile, "fmnist_vit", "base_ptq", 4, top1)
        data = json.loads((path / "results.json").read_text())
        data["config"]["model"]["outliers"] = {"profile": profile}
        (path / "results.json").write_text(json.dumps(data))
    rep = build_report([tmp_path])
    rows = rep["table"].display
    assert list(rows["model"]) == ["fmnist_vit", "fmnist_vit+severe"]
    assert list(rows["BasePTQ W4A4"]) == ["80.00†", "40.00†"]  # one run each (n = 1)


@pytest.mark.slow
def test_outlier_ranges_notebook(tmp_path):
    from tests.test_notebooks import NOTEBOOKS, ROOT, run_nbmake, to_ipynb

    out = tmp_path / "outliers"
    params = {"MODELS": ["fmnist_swin"], "PROFILES": ["none", "deit_like"], "N_IMAGES": 4, "OUT_DIR": str(out),
              "ROOT": str(ROOT)}
    run_nbmake(to_ipynb(NOTEBOOKS / "outlier_ranges.py", params, tmp_path))
    assert sorted(p.name for p in out.iterdir()) == ["distributions_fmnist_swin.png", "ranges.csv", "ranges.md",
                                                     "ranges_fmnist_swin_deit_like.png"]
    ranges = pd.read_csv(out / "ranges.csv")
    stressed = ranges[ranges["profile"] == "deit_like"]["max_over_median"]
    plain = ranges[ranges["profile"] == "none"]["max_over_median"]
    assert stressed.median() > 2 * plain.median()
