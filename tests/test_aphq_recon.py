"""recon.rec_norm=first (the APHQ-ViT code's block-reconstruction loss normalization, in recon=aphq_official)."""
from __future__ import annotations

import pytest
import torch

from ptq.errors import PTQError


def test_first_step_normalization_by_hand():
    """Each step's loss divided by the first step's value, times 2 (a number: the gradient keeps its direction)."""
    from ptq.recon.stage import first_step_normalized

    values = iter([5.0, 2.5, 10.0])
    crit = first_step_normalized(lambda out, target, idx: out.sum() * next(values))
    out = torch.ones(1, requires_grad=True)
    got = [crit(out, None, None) for _ in range(3)]
    assert [g.item() for g in got] == [2.0, 1.0, 4.0]
    got[1].backward()
    assert out.grad.item() == pytest.approx(2.5 * 2 / 5.0)


def test_official_preset_sets_it_and_bad_values_are_refused(compose):
    from ptq.recon.config import resolve_recon

    assert resolve_recon(compose(["recon=aphq_official"]).recon).rec_norm == "first"
    assert resolve_recon(compose(["recon=aphq"]).recon).rec_norm == "none"
    with pytest.raises(PTQError, match=r"recon.rec_norm=bogus; valid: first, none"):
        resolve_recon(compose(["recon=aphq", "recon.rec_norm=bogus"]).recon)
