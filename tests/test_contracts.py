"""Contract tests over the registries: every registered quantizer and metric, parametrized by name, so a new one
is tested by being registered (ptq/quantizers/, ptq/metrics/)."""
from __future__ import annotations

import pytest
import torch

from ptq.errors import PTQError
from ptq.metrics import METRICS, NEEDS_GRAD
from ptq.quant.config import COMPAT, PARTNERS
from ptq.quant.params import restored_keys
from ptq.quantizers import QUANTIZERS, Layout
from ptq.schema import SearchConfig

DOMAINS = ("real", "nonnegative", "probability", "post_gelu")
SEARCH = SearchConfig(alpha=0.3, beta=1.2, n=7, rounds=1, include_beta=True)
LAYOUTS = {"tensor": Layout(), "channel": Layout(-1, 6, 6), "block": Layout(-1, 6, 3)}


def sample(domain: str, shape=(5, 4, 6), seed: int = 0) -> torch.Tensor:
    """Values of the kind the quantizer declares it takes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * torch.linspace(0.5, 3.0, shape[-1])  # channels of differing ranges
    if domain == "nonnegative":
        return x.abs()
    if domain == "probability":
        return x.softmax(dim=-1)
    if domain == "post_gelu":
        return torch.nn.functional.gelu(x)
    return x


def calibrated(kind: str, bits: int, layout: str, form: str = "paper"):
    cls = QUANTIZERS[kind]
    q = cls(bits, LAYOUTS[layout], form=form)
    x = sample(cls.domain)
    q.initialize(x)
    q.enabled = True
    return q, x


def check_quantizer_contract(kind: str) -> None:
    """Every property a quantizer must have for the machinery; also used by tests/test_extending.py."""
    cls = QUANTIZERS[kind]
    assert cls.domain in DOMAINS and set(cls.PARTNER) == set(COMPAT) and set(cls.PARTNER.values()) <= set(PARTNERS)
    with pytest.raises(PTQError, match="no_such_option"):
        cls(4, Layout(), no_such_option=1)
    for layout in LAYOUTS:
        for form in COMPAT:
            for bits in (3, 4, 8):
                q, x = calibrated(kind, bits, layout, form)
                params = q.candidates(SEARCH)
                # one parameter vector per scale group: [C, G] (a scale) or [C, G, K] (e.g. scale and zero point)
                assert params.shape[1:] == q.param.shape and q.param.shape[0] == q.layout.groups
                batched = q.fake(x, params)
                assert batched.shape == (params.shape[0], *x.shape)
                # the official AdaLog scores candidates with the reference's float32 search table, one ulp off the
                # inference table its calibrated value uses (ptq/quantizers/adalog.py): compare it set against set
                search_table = kind.startswith("adalog") and form == "official"
                for c in range(params.shape[0]):   # one tensor op over candidates == a loop over them
                    assert torch.equal(batched[c], q.fake(x, params[c:c + 1])[0]), (layout, form, bits, c)
                    if not search_table:
                        assert torch.equal(batched[c], q.fake(x, params[c])), (layout, form, bits, c)
                out = q(x)
                assert out.shape == x.shape and torch.isfinite(out).all()
                # at most 2^bits distinct values per scale group (one more only where the form declares it)
                assert 2 ** bits <= q.max_values() <= 2 ** bits + 1
                groups = q.layout.group_values(out)
                assert max(len(torch.unique(g)) for g in groups) <= q.max_values()
                if form == "paper":  # a fixed point on its own grid
                    assert torch.allclose(q(out), out, rtol=0, atol=1e-6 * out.abs().max().item())
                # export / load round trip: a fresh quantizer restored from the export quantizes identically
                fresh = cls(bits, LAYOUTS[layout], form=form)
                exported = q.export()
                # what a saved file is checked for on load (issue 27): the restored keys and the steps (> 0)
                assert restored_keys(fresh) <= set(exported) and set(cls.POSITIVE_KEYS) <= set(exported)
                assert all(bool((exported[k] > 0).all()) for k in cls.POSITIVE_KEYS), (layout, form, bits)
                fresh.restore(exported)
                fresh.enabled = True
                assert torch.equal(fresh(x), out)


@pytest.mark.parametrize("kind", sorted(QUANTIZERS))
def test_quantizer_contract(kind):
    check_quantizer_contract(kind)


def test_search_partner_declared_per_compat():
    """The twin softmax quantizer searches its split with v float in official mode (SPEC section 5)."""
    assert QUANTIZERS["twin_softmax"].PARTNER == {"paper": "quantized", "official": "float"}
    assert QUANTIZERS["uniform"].PARTNER == {"paper": "quantized", "official": "quantized"}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_contract(name):
    """[C, S, G, T, F] -> [C, G]; the float output itself scores best in every group; scoring candidates together
    equals scoring them one by one; the metric may overwrite its input without changing the result."""
    g = torch.Generator().manual_seed(1)
    c, s, gr, t, f = 6, 3, 2, 5, 8
    out = torch.randn(s, gr, t, f, generator=g, dtype=torch.float64)
    g2 = torch.rand(s, gr, t, f, generator=g, dtype=torch.float64) + 0.1 if name in NEEDS_GRAD else None
    noise = torch.randn(c, s, gr, t, f, generator=g, dtype=torch.float64) * torch.linspace(0, 1, c)[:, None, None,
                                                                                                      None, None]
    cand = out + noise                       # candidate 0 is the float output itself
    scores = METRICS[name](cand.clone(), out, g2)
    assert scores.shape == (c, gr) and torch.isfinite(scores).all()
    assert (scores[0] >= scores[1:].max(dim=0).values - 1e-12).all()
    single = torch.cat([METRICS[name](cand[i:i + 1].clone(), out, g2) for i in range(c)])
    assert torch.allclose(scores, single, rtol=1e-12, atol=1e-12)
