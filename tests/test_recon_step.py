"""The opt-in forms of the reconstruction step (ptq/recon/step.py): the compiled step computes the eager step's loss
and gradients (to float rounding: fusion reorders sums), compiles one graph per unit structure and regularizer
phase -- not one per unit or per annealed exponent -- and bf16 precision runs the matmuls in bfloat16; the compiled
step's optimizer (FusedAdam) is torch's fused Adam bit for bit; the default loop uses none of them, and a whole
reconstruction in the fast form (compile + bf16) learns what the default one learns, to rounding."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ptq.errors import PTQError
from ptq.quant.modules import QLinear
from ptq.quantizers import QUANTIZERS, Layout
from ptq.recon.config import resolve_recon
from ptq.recon.learnable import install
from ptq.recon.stage import output_loss
from ptq.recon.step import compiled_step_loss, step_loss


def _qlinear(seed: int) -> QLinear:
    """A quantized linear layer (4-bit weight and input, min-max steps, enabled), frozen."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(8, 16, generator=g) * 0.3)
        lin.bias.copy_(torch.randn(8, generator=g) * 0.1)
    wq, xq = QUANTIZERS["uniform"](4, Layout()), QUANTIZERS["uniform"](4, Layout())
    wq.set_param(lin.weight.detach().abs().max().reshape(1) / 7)
    xq.set_param(torch.tensor([2.5 / 7]))
    op = QLinear(lin, wq, xq)
    for p in op.parameters():
        p.requires_grad_(False)
    wq.enabled = xq.enabled = True
    return op


def _unit(seed: int) -> tuple[QLinear, list, list]:
    """_qlinear(seed) with its reconstruction stand-ins."""
    op = _qlinear(seed)
    inst = install(op, True, True, 0.0)
    return op, inst.rounding(), inst.steps()


def _criterion(out, target, idx):
    return output_loss(out, target, None, False, 1.0)


def _step(fn, seed: int, b: float | None, precision: str = "float32"):
    op, rounding, steps = _unit(seed)
    g = torch.Generator().manual_seed(seed + 10)
    x, target = torch.randn(4, 5, 16, generator=g), torch.randn(4, 5, 8, generator=g)
    with torch.enable_grad():
        loss, rec = fn(op, rounding, _criterion, 0.01, [x], target, torch.arange(4),
                       None if b is None else torch.tensor(b), precision)
        loss.backward()
    return loss.detach(), rec.detach(), rounding[0].alpha.grad, steps[0].grad


def test_compiled_step_equals_the_eager_one_and_compiles_once_per_phase():
    from torch._dynamo.utils import counters

    compiled = compiled_step_loss()
    graphs = counters["stats"]["unique_graphs"]
    for seed, b in ((0, 20.0), (1, 7.5), (2, None), (3, 2.0)):       # new units, a new exponent, warm-up
        eager = _step(step_loss, seed, b)
        fast = _step(compiled, seed, b)
        for e, f in zip(eager, fast):
            assert torch.allclose(e, f, rtol=1e-5, atol=1e-7), (seed, b)
        assert eager[2].abs().sum() > 0 and eager[3].abs().sum() > 0       # both kinds of parameter learn
        if b is not None:
            assert eager[0] > eager[1]                                      # the regularizer joined the loss
    assert counters["stats"]["unique_graphs"] - graphs == 2     # regularized and warm-up: nothing per unit or b


def test_bfloat16_precision_runs_the_matmuls_in_bfloat16():
    dtypes = []
    op, rounding, _ = _unit(0)
    op.register_forward_hook(lambda mod, args, out: dtypes.append(out.dtype))
    x, target = torch.randn(4, 5, 16), torch.randn(4, 5, 8)
    with torch.enable_grad():
        loss16, _ = step_loss(op, rounding, _criterion, 0.01, [x], target, torch.arange(4), torch.tensor(5.0),
                              "bfloat16")
        loss32, _ = step_loss(op, rounding, _criterion, 0.01, [x], target, torch.arange(4), torch.tensor(5.0),
                              "float32")
    assert dtypes == [torch.bfloat16, torch.float32]
    assert loss16.dtype == torch.float32 and loss16 != loss32
    assert torch.allclose(loss16, loss32, rtol=2e-2)


def test_an_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(PTQError, match=r"recon.precision=fp16; valid: .*bfloat16.*float32"):
        resolve_recon(OmegaConf.create({"name": "brecq", "precision": "fp16"}))


def test_the_stage_reads_the_precision(compose):
    """recon.precision=bfloat16 reaches the stage's step: a short reconstruction learns other parameters than the
    float32 one (the rounding moved in both)."""
    from test_recon_kernels import short_reconstruction

    f32, bf16 = (short_reconstruction(compose, "ptq4vit", "brecq", f"recon.precision={p}")
                 for p in ("float32", "bfloat16"))
    assert f32.keys() == bf16.keys()
    assert any(not torch.equal(f32[k], bf16[k]) for k in f32)
    for state in (f32, bf16):
        assert any(state[k].abs().sum() > 0 for k in state if k.endswith(".rounding"))


def test_fused_adam_takes_torchs_fused_adam_steps_bit_for_bit():
    """FusedAdam (the compiled step's optimizer) against torch.optim.Adam(fused=True): the same parameters after
    steps with a learning rate changed between them, two groups, and a parameter left without a gradient once."""
    from ptq.recon.step import FusedAdam

    g = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 3, generator=g), torch.randn(7, generator=g), torch.randn(2, 2, generator=g)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(6)]
    results = []
    for make in (lambda groups: torch.optim.Adam(groups, fused=True), FusedAdam):
        params = [nn.Parameter(p.clone()) for p in start]
        opt = make([{"params": params[:2], "lr": 1e-2}, {"params": params[2:], "lr": 4e-5}])
        for t, gs in enumerate(grads):
            opt.zero_grad(set_to_none=True)
            for i, (p, gr) in enumerate(zip(params, gs)):
                if not (t == 2 and i == 1):          # params[1] has no gradient at step 2: skipped, not stepped
                    p.grad = gr.clone()
            opt.param_groups[1]["lr"] = 4e-5 * (1 + t) / 6
            opt.step()
        results.append([p.detach() for p in params])
    for a, b, s in zip(*results, start):
        assert torch.equal(a, b) and not torch.equal(a, s)


def _reconstruct(monkeypatch=None, **options) -> tuple[QLinear, dict]:
    """reconstruct_unit on _qlinear(0) (fed float inputs, the float layer's output as the target), 40 steps, the
    regularizer on every step (one compiled graph)."""
    from ptq.recon.stage import reconstruct_unit
    from ptq.schema import ReconConfig

    op = _qlinear(0)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(24, 5, 16, generator=g)
    target = torch.nn.functional.linear(x, op.weight, op.bias)
    rc = ReconConfig(name="brecq", iters=40, batch_size=4, eval_images=24, lr_step=1e-3, warmup=0.0, **options)
    row = reconstruct_unit("op", op, rc, [x], None, target, _criterion, torch.Generator().manual_seed(0), False)
    return op, row


def test_the_default_loop_takes_neither_fast_form(monkeypatch):
    """recon.compile / recon.precision unset: the stage runs the eager step and torch's Adam (the bit-identical
    path of tests/test_regression.py), never the compiled step or FusedAdam."""
    import ptq.recon.stage as stage

    def refuse(*args, **kwargs):
        raise AssertionError("the default loop took a fast form")

    monkeypatch.setattr(stage, "compiled_step_loss", refuse)
    monkeypatch.setattr(stage, "FusedAdam", refuse)
    monkeypatch.setattr(stage, "step_loss", refuse)
    _, row = _reconstruct()
    assert row["iters"] == 40 and row["mse_after"] < row["mse_before"]


def test_the_fast_form_reconstructs_what_the_default_does():
    """40 steps of compile + bf16 against the default loop from the same start and draws: both lower the output
    error, by about as much, and harden nearly the same rounding; the learned input step stays close."""
    default, row0 = _reconstruct()
    fast, row1 = _reconstruct(compile=True, precision="bfloat16")
    assert row1["mse_after"] < row1["mse_before"] == row0["mse_before"]
    assert abs(row1["mse_after"] - row0["mse_after"]) < 0.1 * row0["mse_after"]
    r0, r1 = default.weight_quantizer.rounding, fast.weight_quantizer.rounding
    assert r0.abs().sum() > 0 and (r0 == r1).float().mean() > 0.95
    assert torch.allclose(default.input_quantizer.param, fast.input_quantizer.param, rtol=1e-2)
