"""APHQ-ViT's quantizer preset (conf/quantizer/aphq.yaml, ptq/quant/stages/aphq.py, ptq/quantizers/uniform_clip.py):
it composes, every operand gets an asymmetric uniform quantizer, the post-ReLU fc2 input keeps z = 0 in the paper
form, the clipping-bound candidates and the matmul search equal independent numpy computations, bad keys refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ptq.errors import PTQError
from ptq.quant.fpcs import beam_search
from ptq.quantizers import QUANTIZERS, Layout
from ptq.quantizers.uniform_clip import percentile_levels

CONF = str(Path(__file__).parents[1] / "conf")


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose("config", overrides=["logger=none", *overrides])


def _pcfg(*overrides: str):
    from ptq.quant.config import resolve_ptq_config

    return resolve_ptq_config(_compose(*overrides))


def _tiny_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=24,
                             depth=1, num_heads=2, num_classes=4).eval()


# -- the preset --------------------------------------------------------------------------------------------------
def test_preset_composes_in_both_forms():
    cfg = _compose("quantizer=aphq", "bits=w4a4")
    assert cfg.quantizer.recipe == ["aphq_search"] and cfg.metric.name == "mse" and cfg.quantizer.compat == "paper"
    official = _compose("quantizer=aphq_official")
    assert official.quantizer.compat == "official"
    assert official.quantizer.slots == cfg.quantizer.slots
    assert _pcfg("quantizer=aphq", "recon=aphq").recon.loss == "aph"


def _quantize(compat: str):
    """The preset with MLP reconstruction reduced to its GELU -> ReLU swap (mlp_recon.iters=0; its distillation is
    tested in test_mlp_recon.py), on a 1-block ViT."""
    from ptq.quant.recipe import quantize_model
    from ptq.quant.wrap import quant_ops

    pcfg = _pcfg("quantizer=aphq", "bits=w4a4", f"quantizer.compat={compat}", "quantizer.search.rounds=1",
                 "mlp_recon=aphq", "mlp_recon.iters=0", "mlp_recon.eval_images=4")
    model = _tiny_vit()
    g = torch.Generator().manual_seed(3)
    x, rx = torch.randn(6, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)
    report = quantize_model(model, pcfg, x, torch.zeros(6, dtype=torch.long), progress=False,
                            recon_data=(rx, torch.zeros(8, dtype=torch.long)))
    assert isinstance(model.blocks[0].mlp.act, torch.nn.ReLU)
    return model, quant_ops(model), report, x


@pytest.mark.parametrize("compat", ["paper", "official"])
def test_every_operand_is_uniform_and_post_relu_zero_point(compat):
    """Every quantizer is an asymmetric uniform one (its outputs lie on s (k - z), at most 2^b levels, k integer);
    the image stays float; the post-ReLU fc2 input has z = 0 in the paper form only."""
    from ptq.quantizers.uniform_grid import UniformGridQuantizer

    model, ops, report, x = _quantize(compat)
    assert ops["patch_embed.proj"].quantizer("input") is None                          # the image: float
    kinds = {}
    for name, op in ops.items():
        for operand, q in op.quantizers().items():
            assert isinstance(q, UniformGridQuantizer) and q.initialized, (name, operand)
            kinds[(name.split(".")[-1], operand)] = q.kind
            w = op.weight if operand == "weight" else None
            if w is None:
                continue
            s, z = q.param[:, 0].double().numpy(), q.param[:, 1].double().numpy()
            out = q.fake(w, q.param[None])[0].detach().double().numpy()
            rows = out.reshape(len(s), -1) if len(s) > 1 else out.reshape(1, -1)
            k = rows / s[:, None] + z[:, None]
            assert np.allclose(k, np.round(k), atol=1e-3) and k.min() > -1e-3 and k.max() < 15 + 1e-3
    assert kinds[("proj", "weight")] in ("uniform_clip", "uniform_grid")
    assert {kinds[("matmul1", "a")], kinds[("matmul2", "a")], kinds[("matmul2", "b")]} == {"uniform_clip"}
    assert kinds[("fc2", "input")] == "uniform_grid"
    fc2_in = ops["blocks.0.mlp.fc2"].input_quantizer
    assert fc2_in.slot == "gelu" and fc2_in.options["z_grid"] == "post_relu"
    z_candidates = fc2_in.candidates(None)[..., 1]
    if compat == "paper":   # every candidate, so the chosen one, has z = 0
        assert torch.equal(z_candidates, torch.zeros_like(z_candidates)) and fc2_in.param[0, 1] == 0
    else:                   # the code's path: the ordinary 16 zero points
        assert fc2_in.z_grid() == "input" and sorted(set(z_candidates.flatten().tolist())) == list(range(16))
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    mm = next(layer for layer in report.layers if layer.name.endswith("matmul1"))
    # one joint pass (a, then b) before the rounds, then per round a then b, two refine stages each
    assert [(s.operand, s.round) for s in mm.steps] == [("a:output", -1), ("b:output", -1),
                                                        ("a:output", 0), ("b:output", 0)]
    extra = compat == "paper"   # the paper form re-scores the survivor in its second stage (ptq/quant/fpcs.py)
    assert [s.n_candidates for s in mm.steps] == [129, 129, 258 + extra, 258 + extra]


def test_zero_grid_matches_numpy():
    """z_grid zero: one zero point (0) and 128 scales (d_lo + i/127 (d_hi - d_lo)) / 15, clamped to 1e-4."""
    q = QUANTIZERS["uniform_grid"](4, Layout(), form="paper", z_grid="zero", stages=1)
    x = torch.relu(torch.randn(4000, generator=torch.Generator().manual_seed(0)))
    g = q.grid(x)
    v = x.double().numpy()
    d_lo = np.quantile(v, 0.9) - np.quantile(v, 0.1)
    d_hi = v.max() - v.min()
    want = np.maximum((d_lo + np.arange(128) / 127 * (d_hi - d_lo)) / 15, 1e-4)
    assert g.shape == (128, 1, 2) and torch.equal(g[..., 1], torch.zeros(128, 1))
    assert np.allclose(g[:, 0, 0].double().numpy(), want, rtol=1e-5)
    wide = QUANTIZERS["uniform_grid"](4, Layout(), form="paper", z_grid="weight_wide", stages=1)
    assert sorted(set(wide.grid(x)[:, 0, 1].tolist())) == list(range(0, 16))      # min(16, 2^b) zero points


# -- uniform_clip ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("clip", ["value", "percentile"])
def test_clip_bounds_and_pairs_match_numpy(clip):
    q = QUANTIZERS["uniform_clip"](4, Layout(-1, 3, 3), form="paper", clip=clip, candidates=16)
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(1)) * torch.tensor([1.0, 2.0, 0.5])
    up, lo = q.bounds(x)
    v = x.double().numpy().T                                                      # [G, n]
    if clip == "value":
        u0, u1 = np.quantile(v, 0.99, axis=1), np.quantile(v, 0.99999, axis=1)
        l0, l1 = np.quantile(v, 0.01, axis=1), np.quantile(v, 0.00001, axis=1)
        f = np.arange(17)[:, None] / 16
        want_u, want_l = u0 + f * (u1 - u0), l1 + f * (l0 - l1)
    else:
        p = np.array([0.99 + 0.0099 * np.sqrt(i / 15) for i in range(16)] + [1.0])
        want_u = np.quantile(v, p, axis=1)
        want_l = np.quantile(v, 1 - p, axis=1)
        assert np.allclose(percentile_levels(16), p)
    assert np.allclose(up.double().numpy(), want_u, rtol=1e-5, atol=1e-6)
    assert np.allclose(lo.double().numpy(), want_l, rtol=1e-5, atol=1e-6)
    q.start(x)
    iu = torch.tensor([[3, 0, 16]])
    il = torch.tensor([[5, 16, 0]])
    pair = q.pairs(iu, il)[0].double().numpy()
    u, l_ = want_u[[3, 0, 16], [0, 1, 2]], want_l[[5, 16, 0], [0, 1, 2]]
    s = (u - l_) / 15
    assert np.allclose(pair[:, 0], s, rtol=1e-5) and np.allclose(pair[:, 1], -np.round(l_ / s))


def test_clip_search_is_joint_then_coordinate_descent():
    """The plan of phase full equals a brute force: best joint pair (i, i), then the best lower bound with the
    upper fixed, then the best upper with that lower fixed, per group, on any score."""
    q = QUANTIZERS["uniform_clip"](3, Layout(-1, 2, 2), form="official", clip="value", candidates=8)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([[0.31, 1.0], [0.17, 2.0]])                             # an arbitrary optimum per group

    def score(cand):                                                              # [C, G, 2] -> [C, G]
        return -((cand - target[None]) ** 2 * torch.tensor([100.0, 0.01])).sum(-1).double()

    q.start(x)
    best, scored, _ = beam_search(q.beam_plan(x), score)
    up, lo = q.bounds(x)
    for g in range(2):
        def sc(i, j, g=g):
            s = (up[i, g] - lo[j, g]) / 7
            return -(100 * (s - target[g, 0]) ** 2 + 0.01 * (-torch.round(lo[j, g] / s) - target[g, 1]) ** 2)
        i = max(range(9), key=lambda k: (sc(k, k), -k))
        j = max(range(9), key=lambda k: (sc(i, k), -k))
        i = max(range(9), key=lambda k: (sc(k, j), -k))
        s = (up[i, g] - lo[j, g]) / 7
        assert torch.allclose(best[g, 0], s) and best[g, 1] == -torch.round(lo[j, g] / s)
    assert scored == 27


# -- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, needle", [
    ("quantizer.slots.matmul.options.clip=bogus", "valid: percentile, value"),
    ("+quantizer.slots.matmul.options.bogus=1", "options.bogus of quantizer uniform_clip; valid: candidates, clip"),
    ("quantizer.slots.gelu.options.z_grid=bogus", "post_relu"),
])
def test_bad_keys_are_refused(override, needle):
    from ptq.quant.wrap import wrap_model

    with pytest.raises(PTQError, match=needle.replace("(", r"\(")):
        wrap_model(_tiny_vit(), _pcfg("quantizer=aphq", override))


def test_misspelt_preset_key_is_refused():
    from ptq.app import check_config
    from ptq.cli import compose_config

    with pytest.raises(PTQError, match="quantizer.bogus"):
        check_config(compose_config(overrides=["quantizer=aphq", "+quantizer.bogus=1", "logger=none"]))
