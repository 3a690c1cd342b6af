"""FIMA-Q's code form of its loss (`fisher_dplr_official`, ptq/recon/losses/fisher_dplr_official.py) and the
official preset recon=fima_q_official: the secant terms against an explicit computation on tiny tensors, the
refresh against per-image autograd gradients (with every quantizer outside the unit off), the refresh schedule and
renormalization, and the preset's settings."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_model_and_images
from torch import nn

from ptq.errors import PTQError
from ptq.quant import quantize_model, resolve_ptq_config
from ptq.quant.wrap import quant_ops
from ptq.recon.losses import get_recon_loss
from ptq.recon.losses.fisher_dplr_official import SecantFisher, secant_terms

CALIB = ["calib.n_images=8", "calib.batch_size=8", "threads=1", "model.checkpoint=null", "quantizer=base_ptq",
         "quantizer.recipe=[init_minmax]"]   # a random model, min-max calibrated (fast)


def test_secant_terms_against_the_explicit_low_rank_matrix():
    """loss_1 = mean_b e_b^T (G^T (Delta Delta^T)^-1 G) e_b with the j x N matrices written out in numpy (float64),
    loss_2 = mean over all elements of e^2 times the refresh-mean of G."""
    g = torch.Generator().manual_seed(0)
    out, target = torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    grads, delta = torch.rand(2, 8, generator=g), torch.rand(2, 8, generator=g)
    inverse = torch.linalg.inv(delta @ delta.T)
    l1, l2 = secant_terms(out, target, grads, inverse)
    e = np.abs(out.numpy().astype(np.float64) - target.numpy()).reshape(3, 8)
    gn, dn = grads.numpy().astype(np.float64), delta.numpy().astype(np.float64)
    m = gn.T @ np.linalg.inv(dn @ dn.T) @ gn                      # the N x N low-rank matrix, rank 2
    assert np.linalg.matrix_rank(m) == 2
    want1 = np.mean([e[b] @ m @ e[b] for b in range(3)])
    want2 = np.mean(e ** 2 * gn.mean(0)[None, :])
    assert l1.item() == pytest.approx(want1, rel=1e-5)
    assert l2.item() == pytest.approx(want2, rel=1e-6)


def _tiny():
    torch.manual_seed(0)
    unit = nn.Linear(4, 3)
    model = nn.Sequential(unit, nn.Tanh(), nn.Linear(3, 5))
    x = torch.randn(6, 4)
    return model, unit, x


def _per_image_abs_gradients(model, unit, x, fp, temp):
    """|dKL(softmax(fp/T) || softmax(z/T)) / dO| image by image (batch of one), by autograd."""
    rows = []
    for i in range(len(x)):
        leaf = [None]

        def hook(m, a, o, leaf=leaf):
            leaf[0] = o.detach().requires_grad_(True)
            return leaf[0]
        h = unit.register_forward_hook(hook)
        logits = model(x[i:i + 1])
        h.remove()
        kl = F.kl_div(F.log_softmax(logits / temp, -1), F.softmax(fp[i:i + 1] / temp, -1), reduction="sum")
        rows.append(torch.autograd.grad(kl, leaf[0])[0].abs().flatten())
    return torch.stack(rows)


def test_refresh_schedule_rows_and_renormalization():
    """iters 10, k 5: refreshes before steps 0, 2, 4, 6, 8; each row is the image mean of |g| and of |O - O_fp|;
    right after a refresh the loss is rec_scale * (1 + 1)."""
    model, unit, x = _tiny()
    with torch.no_grad():
        fp = model(x) + torch.randn(6, 5, generator=torch.Generator().manual_seed(2))  # logits the unit's miss
        target = unit(x) + 0.1                        # a "float" output the unit misses by 0.1 everywhere
    want = _per_image_abs_gradients(model, unit, x, fp, 2.0).mean(0)
    state = SecantFisher(model, unit, x, target, fp, 4, rank=5, iters=10, temperature=2.0)
    first = []
    g = torch.Generator().manual_seed(1)
    for step in range(10):
        with torch.no_grad():                         # the unit changes between steps, as when it is optimized
            unit.weight.add_(0.01 * step * torch.randn(unit.weight.shape, generator=g))
        rows = len(state.g)
        loss = state(unit(x[:3]), target[:3], 0.5)
        if len(state.g) > rows:
            first.append(step)
            assert loss.item() == pytest.approx(1.0, abs=1e-6)   # 0.5 * (l1 / l1 + l2 / l2)
    assert first == [0, 2, 4, 6, 8] and state.g.shape == (5, 3) and state.inverse.shape == (5, 5)
    assert torch.allclose(state.g[0], want, rtol=1e-5, atol=1e-9)
    assert torch.allclose(state.delta[0], torch.full((3,), 0.1), atol=1e-6)


def _calibrated(compose):
    cfg = compose(CALIB)
    model, x, recon = random_model_and_images(cfg, 12)
    quantize_model(model, resolve_ptq_config(cfg), x, recon[1][:8], progress=False)
    return model, recon[0]


def test_refresh_runs_the_unit_quantized_and_everything_else_float(compose):
    model, x = _calibrated(compose)
    unit = model.blocks[1]
    inside = {id(op) for op in unit.modules()}
    seen: dict[str, list[bool]] = {}

    def record(name):
        def hook(op, args):
            seen.setdefault(name, [q.enabled for q in op.quantizers().values()])
        return hook

    outs: list[torch.Tensor] = []
    h = unit.register_forward_hook(lambda m, a, o: outs.append(o.detach()))
    with torch.no_grad():
        fp = model(x)
    h.remove()
    state = SecantFisher(model, unit, x, torch.cat(outs), fp, 4, rank=2, iters=4, temperature=20.0)
    hooks = [op.register_forward_pre_hook(record(n)) for n, op in quant_ops(model).items()]
    before = {n: [q.enabled for q in op.quantizers().values()] for n, op in quant_ops(model).items()}
    state.refresh()
    for h in hooks:
        h.remove()
    for n, op in quant_ops(model).items():
        assert all(seen[n]) if id(op) in inside else not any(seen[n]), n
        assert [q.enabled for q in op.quantizers().values()] == before[n], n     # restored
    # the row against per-image autograd with the same quantizer states
    outside = [q for op in quant_ops(model).values() if id(op) not in inside for q in op.quantizers().values()]
    for q in outside:
        q.enabled = False
    want = _per_image_abs_gradients(model, unit, x, fp, 20.0).mean(0)
    for q in outside:
        q.enabled = True
    assert torch.allclose(state.g[0], want, rtol=1e-3, atol=1e-4 * want.max().item())   # batched vs one by one


def test_official_preset_composes_and_reconstructs(compose):
    rc = resolve_ptq_config(compose(["recon=fima_q_official"])).recon
    paper = resolve_ptq_config(compose(["recon=fima_q"])).recon
    assert (rc.name, rc.loss, rc.loss_rank, rc.loss_temp) == ("fima_q_official", "fisher_dplr_official", 5, 20.0)
    assert (rc.iters, rc.batch_size, rc.n_images, rc.inputs, rc.drop_prob, rc.head_loss) == \
           (20000, 32, 1024, "quantized", 0.5, "kl")
    assert (rc.lr_rounding, rc.lr_step, rc.reg_lambda, rc.warmup, rc.b_start, rc.b_end) == \
           (1e-3, 4e-5, 0.01, 0.2, 20.0, 2.0)
    same = [k for k in rc.__dataclass_fields__ if k not in ("name", "loss")]
    assert all(getattr(rc, k) == getattr(paper, k) for k in same)
    assert get_recon_loss("fisher_dplr_official").needs == "refreshed_gradients"
    cfg = compose([*CALIB, "recon=fima_q_official", "recon.iters=5",
                   "recon.batch_size=4", "recon.n_images=12"])
    model, x, recon = random_model_and_images(cfg, 12)
    report = quantize_model(copy.deepcopy(model), resolve_ptq_config(cfg), x, recon[1][:8], progress=False,
                            recon_data=recon)
    units = report.reconstruction["units"]
    assert [u["iters"] for u in units] == [5] * len(units)
    assert all(u["rec_first"] == pytest.approx(2.0) for u in units if u["unit"] != "head")   # renormalized
    bad = compose([*CALIB, "recon=fima_q_official", "recon.iters=2", "recon.compile=true"])
    with pytest.raises(PTQError, match=r"recon.loss=fisher_dplr_official .* valid: recon.compile=false"):
        quantize_model(model, resolve_ptq_config(bad), x, recon[1][:8], progress=False, recon_data=recon)
