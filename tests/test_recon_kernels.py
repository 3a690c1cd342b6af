"""The fused reconstruction kernels (ptq/quantizers/kernels.py) against the same step written plainly: the values
and the gradients of the LSQ fake quantization and of AdaRound's soft rounding + regularizer equal, bit for bit,
what autograd computes for the plain tensor expressions (the code before the kernels), for symmetric and
asymmetric codes, per-tensor and per-group scales, with clamped codes and clipped soft decisions."""
from __future__ import annotations

import pytest
import torch

from ptq.quantizers import QUANTIZERS, Layout
from ptq.quantizers.kernels import SoftParts, soft_round, ste_fake

ZETA, GAMMA = 1.1, -0.1


def plain_ste(x, scale, zero, lo, hi):
    """The LSQ step as it was written before the kernels (uniform / uniform_asym fake_ste)."""
    v = x / scale
    codes = v + (torch.round(v) - v).detach()
    if zero is None:
        return codes.clamp(lo, hi) * scale
    return ((codes + zero).clamp(lo, hi) - zero) * scale


def plain_h(alpha):
    return torch.clamp(torch.sigmoid(alpha) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def plain_soft(alpha, w, scale, zero, lo, hi, b):
    """Soft-rounded weight and regularizer as before: h computed twice, floor(w / s) in the graph."""
    codes = torch.floor(torch.div(w, scale)) + plain_h(alpha)
    if zero is None:
        wq = codes.clamp(lo, hi) * scale
    else:
        wq = ((codes + zero).clamp(lo, hi) - zero) * scale
    reg = (1.0 - (2.0 * plain_h(alpha) - 1.0).abs().pow(b)).sum() if b is not None else None
    return wq, reg


def _data(shape, groups, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * 3
    scale = (torch.rand(groups, generator=g) * 0.5 + 0.2)
    return x, scale, g


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("permuted", [False, True])
def test_ste_fake_equals_the_plain_expression_bit_for_bit(asym, groups, permuted):
    """permuted: x a non-contiguous view (attention's q and k), the gradient contiguous: the reductions of the
    step's gradient must sum in the same memory order as autograd's."""
    x, s0, g = _data((4, groups, 7, 5), groups, 0)
    if permuted:
        x = x.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    layout = Layout(-3, groups, groups) if groups > 1 else Layout()
    zero = layout.expand(torch.randint(2, 6, (groups,), generator=g).float(), x.ndim) if asym else None
    lo, hi = (0, 7) if asym else (-4, 3)                       # 3 bits: many codes clamp at x * 3 / 0.2..0.7
    grad_out = torch.randn(x.shape, generator=g)
    results = []
    for fn in (plain_ste, ste_fake):
        xr, sr = x.clone().requires_grad_(True), s0.clone().requires_grad_(True)
        out = fn(xr, layout.expand(sr.clamp(min=1e-8), x.ndim), zero, lo, hi)
        out.backward(grad_out)
        results.append((out.detach(), xr.grad, sr.grad))
    (o1, gx1, gs1), (o2, gx2, gs2) = results
    assert torch.equal(o1, o2) and torch.equal(gx1, gx2) and torch.equal(gs1, gs2)
    assert (gx1 == 0).any() and (gx1 != 0).any()               # the clamp cut some gradients, not all


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("b", [None, 20.0, 7.3, 2.0])
def test_soft_round_equals_the_plain_expression_bit_for_bit(asym, b):
    w, _, g = _data((12, 9), 1, 1)
    scale = (torch.rand(12, 1, generator=g) * 0.4 + 0.3)
    zero = torch.randint(2, 6, (12, 1), generator=g).float() if asym else None
    lo, hi = (0, 7) if asym else (-4, 3)
    alpha0 = torch.randn(12, 9, generator=g) * 4               # |alpha| large enough that h clips at 0 and 1
    grad_out, lam = torch.randn(12, 9, generator=g), 0.01
    parts = SoftParts(torch.floor(torch.div(w, scale)), zero, scale, lo, hi)
    results = []
    for plain in (True, False):
        alpha = alpha0.clone().requires_grad_(True)
        wq, reg = plain_soft(alpha, w, scale, zero, lo, hi, b) if plain else soft_round(alpha, parts, b)
        loss = (wq * grad_out).sum()
        if b is not None:
            loss = loss + lam * sum([reg])
        loss.backward()
        results.append((wq.detach(), None if b is None else reg.detach(), alpha.grad))
    (w1, r1, g1), (w2, r2, g2) = results
    assert torch.equal(w1, w2) and torch.equal(g1, g2)
    assert b is None or torch.equal(r1, r2)
    h = plain_h(alpha0)
    assert ((h == 0) | (h == 1)).any() and ((h > 0) & (h < 1)).any()


def test_uniform_quantizers_use_the_kernels_with_their_own_formula():
    """soft_fake through the precomputed parts and fake_ste through the kernel still quantize like fake()."""
    for kind, lo_hi in (("uniform", (-8, 7)), ("uniform_asym", (0, 15))):
        q = QUANTIZERS[kind](4, Layout())
        q.set_param(torch.tensor([0.25]))
        if kind == "uniform_asym":
            q.zero_point.fill_(7.0)
        w = torch.linspace(-3, 3, 41)
        frac, up = q.floor_frac(w)
        assert torch.equal(q.soft_fake(w, up), q.fake(w, q.param))          # nearest rounding = fake
        assert torch.equal(q.fake_ste(w, q.param), q.fake(w, q.param))
        assert q.soft_parts(w).lo == lo_hi[0] and q.soft_parts(w).hi == lo_hi[1]


def _plain_step_code(monkeypatch):
    """Swap the reconstruction step back to its plain form: fake_ste, soft rounding and the regularizer as tensor
    expressions (floor(w / s) and h recomputed every step), and the fixed quantizers' straight-through estimator
    computed with its graph recorded."""
    from ptq.quantizers.base import Quantizer
    from ptq.quantizers.uniform import UniformQuantizer
    from ptq.quantizers.uniform_asym import AsymmetricRounding
    from ptq.recon.learnable import LearnedRounding

    def uniform_ste(self, x, param):
        return plain_ste(x, self.layout.expand(param, x.ndim), None, -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1)

    def asym_ste(self, x, param):
        s, z = self._split(param, x.ndim)
        return plain_ste(x, s, z.detach(), 0, 2 ** self.bits - 1)

    def soft_forward(self, w):
        p = self.q.soft_parts(w)
        return plain_soft(self.alpha, w, p.scale, p.zero, p.lo, p.hi, None)[0]

    def regularizer(self, b):
        return (1.0 - (2.0 * plain_h(self.alpha) - 1.0).abs().pow(b)).sum()

    def ste_forward(self, x):
        if not self.enabled:
            return x
        out = self.fake(x, self.param)
        return x + (out - x).detach() if x.requires_grad and torch.is_grad_enabled() else out

    monkeypatch.setattr(UniformQuantizer, "fake_ste", uniform_ste)
    monkeypatch.setattr(AsymmetricRounding, "fake_ste", asym_ste)
    monkeypatch.setattr(LearnedRounding, "forward", soft_forward)
    monkeypatch.setattr(LearnedRounding, "regularizer", regularizer)
    monkeypatch.setattr(Quantizer, "forward", ste_forward)


def short_reconstruction(compose, method: str, recon: str, *overrides: str) -> dict[str, torch.Tensor]:
    """Every saved quantizer tensor after a few steps of the reconstruct stage (warm-up, then the regularizer) on
    the test-bed ViT with random weights, random images."""
    from ptq.models import build_model
    from ptq.quant import quantize_model, resolve_ptq_config
    from ptq.quant.params import quant_state

    cfg = compose(["quantizer=" + method, "bits=w4a4", "quantizer.search.n=4", "quantizer.search.rounds=1",
                   "calib.n_images=8", "logger=none", "model.checkpoint=null", f"recon={recon}", "recon.iters=6",
                   "recon.batch_size=8", "recon.warmup=0.4", "recon.lr_step=1e-3", "recon.eval_images=8",
                   *overrides])
    g = torch.Generator().manual_seed(1)
    x, rx = torch.randn(8, 1, 28, 28, generator=g), torch.randn(16, 1, 28, 28, generator=g)
    y = torch.zeros(16, dtype=torch.long)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    quantize_model(model, resolve_ptq_config(cfg), x, y[:8], progress=False, recon_data=(rx, y))
    return quant_state(model)[0]


@pytest.mark.parametrize("method,recon", [("ptq4vit", "brecq"), ("repq_vit", "qdrop")])
def test_short_reconstruction_is_bit_identical_to_the_plain_step(compose, monkeypatch, method, recon):
    """A few steps of the reconstruct stage (warm-up, then the regularizer) through the kernels and through the
    plain expressions give the same hardened rounding, learned steps and every other saved parameter."""
    fused = short_reconstruction(compose, method, recon)
    _plain_step_code(monkeypatch)
    plain_state = short_reconstruction(compose, method, recon)
    assert fused.keys() == plain_state.keys()
    assert [k for k in fused if not torch.equal(fused[k], plain_state[k])] == []
    rounding = [k for k in fused if k.endswith(".rounding")]
    assert rounding and any(fused[k].abs().sum() > 0 for k in rounding)      # the rounding did move


def test_a_quantizer_without_soft_parts_is_reconstructed_through_soft_fake():
    from ptq.recon.adaround import rectified_sigmoid
    from ptq.recon.learnable import LearnedRounding

    class Plain(QUANTIZERS["uniform"]):     # an extension quantizer written before the kernels
        def soft_parts(self, w):
            raise NotImplementedError

        def soft_fake(self, w, up):
            return (torch.floor(w / self.param) + up).clamp(-8, 7) * self.param

    q = Plain(4, Layout())
    q.set_param(torch.tensor([0.25]))
    w = torch.linspace(-2, 2, 17)
    m = LearnedRounding(q, w)
    m.b = 5.0
    assert m.parts is None
    assert torch.equal(m(w), q.soft_fake(w, rectified_sigmoid(m.alpha)))
    assert torch.equal(m.regularizer(5.0), (1.0 - (2.0 * rectified_sigmoid(m.alpha) - 1.0).abs().pow(5.0)).sum())
