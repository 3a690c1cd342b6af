"""Reconstruction losses (ptq/recon/losses/) against independent computations on tiny blocks: APHQ-ViT's
finite-difference Hessian diagonal against autograd's exact Hessian, FIMA-Q's diagonal-plus-low-rank Fisher
against the explicit matrix and numpy's eigendecomposition, mse / fisher against today's formula bit for bit."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptq.errors import PTQError
from ptq.quant import resolve_ptq_config
from ptq.recon.losses import RECON_LOSSES, get_recon_loss
from ptq.recon.losses.aph import hessian_vector_diag
from ptq.recon.losses.fisher_dplr import dplr, dplr_loss
from ptq.recon.losses.probe import float_logits, output_gradients, sampled_ce
from ptq.schema import ReconConfig
from ptq.sweep import effective_config

T = 2.0   # softmax temperature of the KL


def _tiny(dim: int = 3):
    """A float64 'model': the unit is a Linear(4, dim), then tanh and a 5-class head."""
    torch.manual_seed(0)
    unit = nn.Linear(4, dim).double()
    model = nn.Sequential(unit, nn.Tanh(), nn.Linear(dim, 5).double())
    x = torch.randn(6, 4, dtype=torch.float64)
    return model, unit, x


def _exact_hessians(model, unit, x, fp):
    """Per image, autograd's Hessian of KL(softmax(fp / T) || softmax(head(z) / T)) in the unit output z."""
    head = model[1:]
    with torch.no_grad():
        z = unit(x)
    out = []
    for i in range(len(x)):
        logp = F.log_softmax(fp[i] / T, -1)

        def kl(zi, logp=logp):
            return (logp.exp() * (logp - F.log_softmax(head(zi) / T, -1))).sum()
        out.append(torch.autograd.functional.hessian(kl, z[i]))
    return torch.stack(out)


def test_finite_difference_hessian_diagonal_matches_autograd():
    model, unit, x = _tiny()
    fp = float_logits(model, x, 4)
    hess = _exact_hessians(model, unit, x, fp)                       # [6, 3, 3]
    diag = torch.diagonal(hess, dim1=1, dim2=2)
    off = hess - torch.diag_embed(diag)
    assert (diag > 0).all() and off.abs().sum() > 0.5 * diag.sum()     # the off-diagonal terms matter
    eps = 1e-4
    # all 8 sign patterns: the mean of v * (H v) over them is exactly diag(H) (off-diagonal terms cancel)
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=3)), dtype=torch.float64)
    v = signs[:, None, :].expand(8, len(x), 3).contiguous()
    est = hessian_vector_diag(model, unit, x, 4, fp, v, eps, T).mean(0)
    torch.testing.assert_close(est, diag, rtol=1e-6, atol=1e-9)      # central differences: O(eps^2) = 1e-8
    # the basis directions give the diagonal one coordinate at a time
    basis = torch.eye(3, dtype=torch.float64)[:, None, :].expand(3, len(x), 3).contiguous()
    torch.testing.assert_close(hessian_vector_diag(model, unit, x, 4, fp, basis, eps, T).sum(0), diag,
                               rtol=1e-6, atol=1e-9)
    # the reference code's all-ones direction gives H 1, the row sums, which differ from the diagonal here
    ones = hessian_vector_diag(model, unit, x, 4, fp, torch.ones(1, len(x), 3, dtype=torch.float64), eps, T)[0]
    torch.testing.assert_close(ones, hess.sum(-1), rtol=1e-6, atol=1e-9)
    assert not torch.allclose(ones, diag, rtol=1e-2)


def test_aph_capture_is_the_normalized_image_mean_of_the_diagonal():
    model, unit, x = _tiny()
    fp = float_logits(model, x, 4)
    hess = _exact_hessians(model, unit, x, fp)
    diag = torch.diagonal(hess, dim1=1, dim2=2)
    draws = 50
    rc = ReconConfig(loss="aph", loss_draws=draws, loss_eps=1e-4, loss_temp=T)
    from ptq.recon.losses.base import CaptureContext
    ctx = CaptureContext(model, unit, x, 6, torch.Generator().manual_seed(0), rc, 1)
    inputs, target, weight = get_recon_loss("aph").capture(ctx)
    assert torch.equal(inputs[0], x) and torch.equal(target, unit(x).detach())
    expected = diag.mean(0) / diag.mean()
    # random signs: coordinate i's estimate is H_ii + sum_j!=i H_ij v_i v_j, whose std over the draws and images is
    # sqrt(sum over images, j != i of H_ij^2) / (images sqrt(draws)); 5 of them, on the normalized scale
    off = hess - torch.diag_embed(diag)
    sigma = off.square().sum(dim=(0, 2)).sqrt() / (len(x) * draws ** 0.5) / diag.mean()
    assert ((weight[0] - expected).abs() < 5 * sigma + 0.05 * expected.mean()).all(), (weight, expected, sigma)
    assert weight.shape == (1, 3) and not torch.allclose(weight[0], torch.ones(3, dtype=weight.dtype), atol=0.05)
    ctx.rc = ReconConfig(loss="aph", loss_direction="ones", loss_eps=1e-4, loss_temp=T)
    _, _, w1 = get_recon_loss("aph").capture(ctx)
    rows = hess.sum(-1).abs().mean(0)
    torch.testing.assert_close(w1[0], rows / rows.mean(), rtol=1e-5, atol=1e-8)


def test_dplr_against_the_explicit_fisher_and_numpy_eigendecomposition():
    g = torch.Generator().manual_seed(3)
    samples = torch.randn(12, 6, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    fisher = (samples.T @ samples / 12).numpy()
    c = np.diag(fisher).mean()
    lam, vec = np.linalg.eigh(fisher)
    lam, vec = lam[::-1], vec[:, ::-1]
    e = torch.randn(3, 2, 3, generator=g, dtype=torch.float64)        # 3 images, outputs [2, 3] (N = 6)
    ef = e.flatten(1).numpy()
    for rank in (0, 1, 2, 6, 9):
        d, u = dplr(samples, rank)
        r = min(rank, 6)
        low = (vec[:, :r] * lam[:r]) @ vec[:, :r].T
        np.testing.assert_allclose((u @ u.T).numpy(), low / c, atol=1e-10)            # the top-r spectrum
        np.testing.assert_allclose(d.numpy(), np.clip(np.diag(fisher - low), 0, None) / c, atol=1e-10)
        dense = np.diag(d.numpy()) + u.numpy() @ u.numpy().T
        np.testing.assert_allclose(np.diag(dense), np.diag(fisher) / c, atol=1e-10)    # F's exact diagonal
        quad = np.einsum("bi,ij,bj->b", ef, dense, ef) * 2 / 6                       # e^T F e / (N / dim 1)
        got = dplr_loss(e, torch.zeros_like(e), d, u, 0.5)
        assert got.item() == pytest.approx(0.5 * quad.mean(), rel=1e-12)
        if rank >= 6:
            np.testing.assert_allclose(dense, fisher / c, atol=1e-10)
    # F = I is exactly mse's sum over dim 1, mean over the others
    eye = dplr_loss(e, torch.zeros_like(e), torch.ones(6, dtype=torch.float64), torch.zeros(6, 0, dtype=torch.float64),
                    1.0)
    assert eye.item() == pytest.approx(e.square().sum(1).mean().item(), rel=1e-12)


def test_dplr_gradient_samples_are_each_images_cross_entropy_gradient():
    model, unit, x = _tiny()
    fp = float_logits(model, x, 4)
    grads = output_gradients(model, unit, x, 4, sampled_ce(fp, 2, torch.Generator().manual_seed(5)))
    assert grads.shape == (2, 6, 3)
    gen = torch.Generator().manual_seed(5)
    probs = F.softmax(fp.double(), -1)
    for i in range(0, 6, 4):              # the same draws, batch by batch, against autograd of each image's loss
        ys = [torch.multinomial(probs[i:i + 4], 1, generator=gen).squeeze(1) for _ in range(2)]
        for k, y in enumerate(ys):
            for j in range(len(y)):
                z = unit(x[i + j]).detach().requires_grad_(True)
                F.cross_entropy(model[1:](z)[None], y[j:j + 1]).backward()
                torch.testing.assert_close(grads[k, i + j], z.grad)


def test_mse_and_fisher_criteria_are_todays_formula_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    out, target = torch.randn(4, 5, 6, generator=g), torch.randn(4, 5, 6, generator=g)
    weight, idx = torch.rand(10, 5, 6, generator=g), torch.tensor([3, 0, 7, 9])
    rc = ReconConfig(rec_scale=0.1)
    assert torch.equal(get_recon_loss("mse").criterion(None, rc)(out, target, idx),
                       0.1 * (out - target).square().sum(1).mean())
    assert torch.equal(get_recon_loss("fisher").criterion(weight, rc)(out, target, idx),
                       0.1 * ((out - target).square() * weight[idx]).sum(1).mean())


def test_loss_options_are_validated_against_the_registry(compose):
    assert {"mse", "fisher", "aph", "fisher_dplr"} <= set(RECON_LOSSES)
    with pytest.raises(PTQError, match=r"unknown recon.loss=l7; valid: .*aph.*fisher_dplr"):
        resolve_ptq_config(compose(["recon=brecq", "recon.loss=l7"]))
    with pytest.raises(PTQError, match=r"recon.loss_direction=up; valid: "):
        resolve_ptq_config(compose(["recon=brecq", "recon.loss=aph", "recon.loss_direction=up"]))
    with pytest.raises(PTQError, match=r"impossible recon.loss_rank=-1"):
        resolve_ptq_config(compose(["recon=brecq", "recon.loss=fisher_dplr", "recon.loss_rank=-1"]))
    rc = resolve_ptq_config(compose(["recon=brecq", "recon.loss=fisher_dplr", "recon.loss_rank=3"])).recon
    assert (rc.loss, rc.loss_rank) == ("fisher_dplr", 3)


def test_sweep_ignores_loss_keys_the_loss_does_not_read():
    base = {"quantizer": {"recipe": ["search"]}, "metric": {"name": "mse", "fisher_draws": 4},
            "recon": {"name": "brecq", "loss": "mse", "loss_rank": 5, "loss_eps": 1e-3}}
    eff = effective_config(base)
    assert "loss_rank" not in eff["recon"] and "fisher_draws" not in eff["metric"]
    base["recon"]["loss"] = "fisher_dplr"
    eff = effective_config(base)
    assert eff["recon"]["loss_rank"] == 5 and "loss_eps" not in eff["recon"] and eff["metric"]["fisher_draws"] == 4


def test_paper_presets_compose(compose):
    aphq = resolve_ptq_config(compose(["recon=aphq"])).recon
    assert (aphq.loss, aphq.iters, aphq.drop_prob, aphq.head_loss, aphq.lr_rounding) == ("aph", 20000, 0.5, "kl", 1e-3)
    fima = resolve_ptq_config(compose(["recon=fima_q"])).recon
    assert (fima.loss, fima.loss_rank, fima.iters, fima.drop_prob) == ("fisher_dplr", 5, 20000, 0.5)
