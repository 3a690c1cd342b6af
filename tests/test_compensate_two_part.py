"""ERQ's two-part weights (ptq/compensate/two_part.py): the column choice and the per-row scales of both parts
against a numpy computation on a tiny weight, the fake values, the ERQ stage with it (save / load round trip,
deployability, results), two_part=false leaving the quantizers as they were, and the job identity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptq.compensate.erq import split_two_part
from ptq.compensate.two_part import TwoPartQuantizer, outlier_columns
from ptq.quantizers import QUANTIZERS, Layout


def _columns_by_numpy(w: np.ndarray, percentile: float, rows_per_column: int) -> list[int]:
    """SPEC.md ERQ two-part: per row, outliers above the percentile of its positive weights or below 100 - it of
    its negative ones; count rows per column; the m // rows_per_column most counted, ties by first row, then
    column."""
    m, d = w.shape
    out = np.zeros((m, d), dtype=bool)
    for i, row in enumerate(w):
        if (row > 0).any():
            out[i] |= row > np.percentile(row[row > 0], percentile)
        if (row < 0).any():
            out[i] |= row < np.percentile(row[row < 0], 100 - percentile)
    count = out.sum(axis=0)
    first = [int(np.argmax(out[:, j])) if count[j] else m for j in range(d)]
    ranked = sorted((j for j in range(d) if count[j]), key=lambda j: (-count[j], first[j], j))
    return sorted(ranked[:min(m // rows_per_column, d - 1)])


def _tiny_weight(seed: int) -> torch.Tensor:
    """40 rows x 8 columns; columns 2 and 5 hold large weights in many rows (6 in some), so the choice is not
    trivial: 40 // 20 = 2 columns."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(40, 8, generator=g)
    w[::2, 2] *= 6
    w[1::3, 5] *= -7
    w[::5, 6] *= 5
    return w


@pytest.mark.parametrize("seed", range(4))
def test_outlier_columns_match_numpy(seed):
    w = _tiny_weight(seed)
    got = outlier_columns(w, 99.0, 20).tolist()
    assert got == _columns_by_numpy(w.numpy().astype(np.float64), 99.0, 20)
    assert len(got) == 2
    assert outlier_columns(w, 90.0, 10).tolist() == _columns_by_numpy(w.numpy().astype(np.float64), 90.0, 10)


def test_outlier_column_ties_go_to_the_first_row_then_the_lower_index():
    w = torch.ones(40, 8)
    w[0, 6] = w[1, 1] = w[2, 4] = 50.0          # one outlier row each, first rows 0, 1, 2: 6 and 1 (2 columns)
    assert outlier_columns(w, 99.0, 20).tolist() == [1, 6] == _columns_by_numpy(w.numpy(), 99.0, 20)
    w = torch.ones(40, 8)
    w[3, 5] = w[3, 2] = 50.0                    # the same row (median threshold: both outliers), 1 column: the lower
    assert outlier_columns(w, 50.0, 40).tolist() == [2] == _columns_by_numpy(w.numpy(), 50.0, 40)
    w = torch.ones(40, 8)
    w[0, :4], w[0, 7] = -1.0, -50.0             # a negative outlier; only counted columns are chosen (1 of 2)
    assert outlier_columns(w, 99.0, 20).tolist() == [7] == _columns_by_numpy(w.numpy(), 99.0, 20)
    assert outlier_columns(torch.ones(19, 8), 99.0, 20).numel() == 0   # fewer rows than rows_per_column


def _asym_fit_by_numpy(v: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """uniform_asym's percentile fit (SPEC-repq section 2) per row, in numpy: the (D, z) of the lowest MSE."""
    ds, zs = [], []
    for row in v:
        best = None
        for p in (0.999, 0.9999, 0.99999):
            hi, lo = np.quantile(row, p), np.quantile(row, 1 - p)
            d = max((hi - lo) / (2 ** bits - 1), 1e-8)
            z = np.round(-lo / d)
            err = (((np.clip(np.round(row / d) + z, 0, 2 ** bits - 1) - z) * d - row) ** 2).mean()
            if best is None or err < best[0]:
                best = (err, d, z)
        ds.append(best[1])
        zs.append(best[2])
    return np.array(ds), np.array(zs)


def test_two_part_scales_and_fake_values_match_numpy():
    """RepQ-ViT's per-row uniform_asym: each part's per-row (scale, zero point) is the percentile fit of that row's
    columns of the part; fake quantizes each weight on its part's grid."""
    w = _tiny_weight(0)
    q = QUANTIZERS["uniform_asym"](4, Layout(-2, 40, 40))
    q.initialize(w)
    two = split_two_part(q, w, 99.0, 20)
    assert isinstance(two, TwoPartQuantizer) and two.outer is q
    cols = _columns_by_numpy(w.numpy().astype(np.float64), 99.0, 20)
    rest = [j for j in range(8) if j not in cols]
    assert two.columns.tolist() == cols
    wn = w.numpy().astype(np.float64)
    expect = np.empty_like(wn)
    for part, idx in ((two.inner, cols), (two.outer, rest)):
        d, z = _asym_fit_by_numpy(wn[:, idx], 4)
        assert np.allclose(part.param.numpy(), d, rtol=1e-5) and np.array_equal(part.zero_point.numpy(), z)
        expect[:, idx] = (np.clip(np.round(wn[:, idx] / d[:, None]) + z[:, None], 0, 15) - z[:, None]) * d[:, None]
    assert np.allclose(two.fake(w, two.param).numpy(), expect, atol=1e-5)
    # floor / ceil choices, hardening: fake(w) = soft_fake(w, up) afterwards, on each part's grid
    frac, up = two.floor_frac(w)
    assert frac.shape == w.shape and bool(((frac >= 0) & (frac < 1)).all())
    flipped = 1.0 - up
    soft = two.soft_fake(w, flipped)
    two.harden(w, flipped)
    assert torch.equal(two.fake(w, two.param), soft)
    assert two.rounding is not None and two.inner.rounding is not None


def test_searched_quantizer_keeps_its_multiplier_on_both_parts():
    w = _tiny_weight(1)
    q = QUANTIZERS["uniform"](4, Layout(-2, 40, 40))
    q.initialize(w)
    q.set_param(q.param * 0.8)
    two = split_two_part(q, 2 * w, 99.0, 20)
    w_outer, w_inner = two.parts(2 * w)
    for part, sub in ((two.outer, w_outer), (two.inner, w_inner)):
        assert torch.allclose(part.param, sub.abs().amax(dim=1) / (2 ** 3 - 0.5) * 0.8)


def test_export_restore_round_trip_and_refusal():
    from ptq.quantizers.base import NotDeployable

    w = _tiny_weight(2)
    q = QUANTIZERS["uniform_asym"](4, Layout(-2, 40, 40))
    q.initialize(w)
    two = split_two_part(q, w, 99.0, 20)
    _, up = two.floor_frac(w)
    two.harden(w, up)
    saved = {k: v.float() for k, v in two.export().items()}          # as quant_state saves it
    fresh = TwoPartQuantizer(QUANTIZERS["uniform_asym"](4, Layout(-2, 40, 40)))
    fresh.restore(saved)
    assert torch.equal(fresh.columns, two.columns) and torch.equal(fresh.fake(w, fresh.param), two.fake(w, two.param))
    with pytest.raises(NotDeployable, match="two_part"):
        two.integer_form()


# one block of width 48: fast
CALIB = ["quantizer=base_ptq", "bits=w4a4", "quantizer.recipe=[init_minmax]", "calib.n_images=8", "logger=none",
         "model.checkpoint=null", "model=fmnist_vit", "model.kwargs.depth=1", "model.kwargs.embed_dim=48"]


def _setup(compose, *overrides):
    from test_compensate_erq import erq_setup

    return erq_setup(compose, *overrides, calib=CALIB)


def test_erq_with_two_part_round_trips_and_is_not_deployable(compose, tmp_path):
    """Official form (two_part on by default): qkv / fc1 weights become two-part, nothing else; saved and loaded
    again the model gives the same logits; the export refuses it naming two_part."""
    import copy

    from ptq.export.deployability import deployability
    from ptq.quant import quantize_model, resolve_ptq_config, save_quant_params
    from ptq.quant.wrap import quant_ops

    cfg, m, x, comp = _setup(compose, "compensate.compat=official", "compensate.iterations=5")
    fresh = copy.deepcopy(m)
    pcfg = resolve_ptq_config(cfg)
    assert pcfg.compensate.two_part is True
    rep = quantize_model(m, pcfg, x, comp[1][:8], progress=False, comp_data=comp)
    two = {n for n, op in quant_ops(m).items()
           if isinstance(getattr(op, "weight_quantizer", None), TwoPartQuantizer)}
    assert two == {n for n in quant_ops(m) if n.endswith((".qkv", ".fc1"))} and len(two) == 2
    rows = {r["layer"]: r["two_part_columns"] for r in rep.compensation["layers"]}
    assert rows["blocks.0.attn.qkv"] == 48 * 3 // 20 and rows["blocks.0.mlp.fc1"] == 48 * 4 // 20
    assert rows["blocks.0.attn.proj"] == 0 and rep.compensation["two_part"] is True
    report = deployability(m)
    assert not report["deployable"] and "two_part" in " ".join(report["simulation_only"].values())
    save_quant_params(m, tmp_path / "p.safetensors")
    load = compose([*CALIB, "compensate=erq", "compensate.compat=official",
                    f"quantizer.load={tmp_path / 'p.safetensors'}"])
    quantize_model(fresh, resolve_ptq_config(load), x, comp[1][:8], progress=False)
    assert isinstance(fresh.get_submodule("blocks.0.mlp.fc1").weight_quantizer, TwoPartQuantizer)
    with torch.no_grad():
        assert torch.equal(fresh(comp[0]), m(comp[0]))


def test_two_part_false_leaves_every_weight_quantizer_as_it_was(compose):
    from ptq.quant import quantize_model, resolve_ptq_config
    from ptq.quant.wrap import quant_ops

    cfg, m, x, comp = _setup(compose, "compensate.compat=official", "compensate.two_part=false",
                             "compensate.iterations=5")
    rep = quantize_model(m, resolve_ptq_config(cfg), x, comp[1][:8], progress=False, comp_data=comp)
    assert not any(isinstance(getattr(op, "weight_quantizer", None), TwoPartQuantizer) for op in quant_ops(m).values())
    assert "two_part" not in rep.compensation and "two_part_columns" not in rep.compensation["layers"][0]
    assert resolve_ptq_config(compose([*CALIB, "compensate=erq"])).compensate.two_part is False   # paper: off


def test_two_part_keys_join_the_job_identity_only_where_they_act(compose):
    from omegaconf import OmegaConf

    from ptq.job_identity import job_identity

    def ident(*overrides):
        cfg = compose(["model=fmnist_vit", "quantizer=repq_vit", *overrides])
        return job_identity(OmegaConf.to_container(cfg, resolve=True))["compensate"]

    for off in (["compensate=erq"], ["compensate=erq", "compensate.compat=official", "compensate.two_part=false"],
                ["compensate=qwt", "compensate.compat=official"]):
        assert not {"two_part", "two_part_percentile", "two_part_rows_per_column"} & set(ident(*off)), off
    on = ident("compensate=erq", "compensate.compat=official")
    assert on["two_part"] is None and on["two_part_percentile"] == 99.0 and on["two_part_rows_per_column"] == 20
