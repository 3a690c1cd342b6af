"""The scale search against brute force, per-group independence and the mse fast path."""
from __future__ import annotations

import torch
from conftest import ptq_config
from torch import nn

from ptq.metrics import METRICS
from ptq.quant.config import SearchConfig
from ptq.quant.fast_paths import linear_input_mse_scores, linear_weight_mse_scores
from ptq.quant.modules import QLinear, QMatMul
from ptq.quant.search import evaluate_candidates, search_op
from ptq.quantizers import QUANTIZERS, Layout


def _linear_op(groups: int = 3, in_f: int = 8, out_f: int = 6, with_input: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    with torch.no_grad():  # blocks of very different magnitude, so their best scales differ
        lin.weight.mul_(torch.tensor([0.2, 0.2, 1.0, 1.0, 5.0, 5.0])[:out_f, None])
    wq = QUANTIZERS["uniform"](4, Layout(-2, out_f, groups))
    iq = QUANTIZERS["uniform"](4, Layout()) if with_input else None
    op = QLinear(lin, wq, iq)
    x = torch.randn(5, 7, in_f)
    out = lin(x).detach()
    wq.initialize(lin.weight)
    if iq is not None:
        iq.initialize(x)
    return op, {"input": x, "out": out}


def _brute_force_weight(op: QLinear, cap, params, metric) -> torch.Tensor:
    """Score every candidate one at a time with plain float ops (no batching, no chunking)."""
    x = cap["input"]
    xq = op.input_quantizer.fake(x, op.input_quantizer.param) if op.input_quantizer is not None else x
    g = params.shape[1]
    rows = []
    for c in range(params.shape[0]):
        w = op.weight_quantizer.fake(op.weight, params[c])
        out = torch.nn.functional.linear(xq, w, op.bias)
        f = out.shape[-1] // g
        oh = out.reshape(5, 7, g, f).permute(0, 2, 1, 3)[None]
        o = cap["out"].reshape(5, 7, g, f).permute(0, 2, 1, 3)
        rows.append(metric(oh.clone(), o, None)[0])
    return torch.stack(rows)


def test_search_equals_brute_force_argmax_per_block():
    op, cap = _linear_op()
    search = SearchConfig(alpha=0.3, beta=1.2, n=40, rounds=1, include_beta=True)
    params = op.weight_quantizer.candidates(search)
    for name in ("mse", "l1", "cosine"):
        brute = _brute_force_weight(op, cap, params, METRICS[name])
        batched = evaluate_candidates(op, "weight", params, cap, METRICS[name], chunk_mb=0.001)  # many chunks
        assert torch.allclose(batched.float(), brute, rtol=1e-4, atol=1e-6)
    pcfg = ptq_config("metric=mse", "calib.chunk_mb=0.01", search=search)
    op.input_quantizer = None
    op.operands = ("weight",)
    brute = _brute_force_weight(op, cap, params, METRICS["mse"])
    search_op("lin", op, cap, METRICS["mse"], pcfg)
    best = brute.argmax(0)
    assert torch.allclose(op.weight_quantizer.param, params[best, torch.arange(3)])
    assert len(set(op.weight_quantizer.param.tolist())) == 3  # q, k, v blocks got their own scales


def test_mse_fast_path_matches_direct():
    op, cap = _linear_op()
    params = op.weight_quantizer.candidates(SearchConfig(alpha=0.1, beta=1.2, n=30, include_beta=True))
    direct = evaluate_candidates(op, "weight", params, cap, METRICS["mse"], chunk_mb=1)
    fast = linear_weight_mse_scores(op, params, cap, chunk_mb=1)
    assert torch.allclose(direct, fast, rtol=1e-4, atol=1e-7)
    assert torch.equal(direct.argmax(0), fast.argmax(0))


def test_mse_fast_paths_for_pair_parameters_match_direct():
    """The weight and input shortcuts with (scale, zero point) candidates [C, G, 2] (uniform_grid) and AdaLog input
    candidates give the direct evaluation's scores, for a widening (in < out) and a narrowing linear."""
    for in_f, out_f in ((6, 10), (10, 4)):
        torch.manual_seed(in_f)
        lin = nn.Linear(in_f, out_f)
        wq = QUANTIZERS["uniform_grid"](4, Layout(-2, out_f, out_f))
        for iq in (QUANTIZERS["uniform_grid"](4, Layout(), z_grid="input"), QUANTIZERS["adalog_gelu"](4, Layout())):
            op = QLinear(lin, wq, iq)
            x = nn.functional.gelu(torch.randn(5, 7, in_f) * 2)
            cap = {"input": x, "out": lin(x).detach()}
            wq.initialize(lin.weight.detach())
            iq.start(x) if hasattr(iq, "scale_range") else iq.initialize(x)
            for operand, params, fast in (("weight", wq.grid(lin.weight.detach()), linear_weight_mse_scores),
                                          ("input", iq.candidates(None) if hasattr(iq, "scale_range")
                                           else iq.grid(x), linear_input_mse_scores)):
                direct = evaluate_candidates(op, operand, params, cap, METRICS["mse"], chunk_mb=1)
                quick = fast(op, params, cap, chunk_mb=0.01)
                assert torch.allclose(direct, quick, rtol=1e-4, atol=1e-7), (in_f, out_f, operand, iq.kind)
                assert torch.equal(direct.argmax(0), quick.argmax(0))


def test_per_head_scales_differ_when_heads_differ():
    torch.manual_seed(0)
    heads = 3
    a = torch.randn(4, 1, heads, 6, 8) * torch.tensor([0.1, 1.0, 10.0])[None, None, :, None, None]
    b = torch.randn(4, 1, heads, 8, 6)
    op = QMatMul(QUANTIZERS["uniform"](4, Layout(-3, heads, heads)), QUANTIZERS["uniform"](4, Layout(-3, heads, heads)),
                 heads)
    cap = {"a": a, "b": b, "out": a @ b}
    op.a_quantizer.initialize(a)
    op.b_quantizer.initialize(b)
    search = SearchConfig(alpha=0.3, n=20, rounds=2, include_beta=True)
    search_op("mm", op, cap, METRICS["mse"], ptq_config("metric=mse", search=search))
    s = op.a_quantizer.param
    assert s[0] < s[1] < s[2] and (s[2] / s[0]) > 20


def test_twin_softmax_split_search_finds_small_m_for_peaked_probs():
    torch.manual_seed(0)
    logits = torch.randn(4, 1, 2, 10, 10) * 4
    probs = logits.softmax(-1)
    v = torch.randn(4, 1, 2, 10, 5)
    op = QMatMul(QUANTIZERS["twin_softmax"](6, Layout(), form="paper"),
                 QUANTIZERS["uniform"](6, Layout(-3, 2, 2)), 2)
    cap = {"a": probs, "b": v, "out": probs @ v}
    op.a_quantizer.initialize(probs)
    op.b_quantizer.initialize(v)
    scores = evaluate_candidates(op, "a", op.a_quantizer.candidates(SearchConfig()), cap, METRICS["mse"], 16,
                                 other_quantized=False)
    assert scores.shape == (20, 1)
    assert 0 < scores.argmax().item() < 19  # a split helps, and too fine a small range does not
