"""The forward of one reconstruction step -- the unit's output loss plus the rounding regularizer -- in the two
opt-in forms that change the arithmetic (recon.compile, recon.precision; issue 23).

Why: on CPU the eager step is bound by its many small pointwise kernels (every fake quantizer, LayerNorm, GELU,
softmax, forward and backward) besides the matmuls; `torch.compile` fuses them into a few loops (and the
backward with them), bf16 autocast halves the matmuls' cost (avx512_bf16). Both change floating-point results
(fusion reorders sums; bf16 rounds the matmul operands), so both are off by default: the default loop in
ptq/recon/stage.py is the bit-identical eager one.

The compiled function is one code object for every unit, its modules passed as arguments: TorchDynamo (with its
default inline_inbuilt_nn_modules) treats their parameters and buffers as graph inputs, so every unit of the same
structure and shapes (all blocks of a ViT) reuses one compiled graph -- two per structure, the warm-up one
without the regularizer and one with it; the regularizer's exponent b is a tensor input, not a constant, so the
annealing does not recompile.

With the compiled step, `FusedAdam` takes the optimizer step: the kernel of torch.optim.Adam(fused=True) (one call
per parameter group, the same arithmetic, bit for bit), without that class's per-step Python (grouping the tensors
by device and dtype, checking their state); on the test-bed block that Python was about as long as the kernel.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ptq.recon.adaround import rounding_regularizer
from ptq.recon.losses.base import Criterion

PRECISIONS = ("float32", "bfloat16")
RECOMPILE_LIMIT = 64      # compiled graphs per code object: two per unit structure (a Swin has several)

StepLoss = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def autocast(precision: str, device: torch.device):
    """The matmuls of the step in `precision` (bfloat16: autocast), or nothing changed (float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def step_loss(unit: nn.Module, rounding: Sequence[nn.Module], criterion: Criterion, reg_lambda: float,
              inputs: list[torch.Tensor], target: torch.Tensor, idx: torch.Tensor, b: torch.Tensor | None,
              precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, output loss) of one step: criterion(unit(inputs), target) [+ reg_lambda * sum over the rounding
    modules of sum(1 - |2h - 1|^b) when b is given]; the rounding modules must not compute the regularizer in
    their forward (b unset)."""
    with autocast(precision, target.device):
        out = unit(*inputs)
    rec = criterion(out.float(), target, idx)
    if b is None or not rounding:
        return rec, rec
    return rec + reg_lambda * sum(rounding_regularizer(m.h(), b) for m in rounding), rec


class FusedAdam:
    """Adam over fixed parameter groups ({"params", "lr"}; betas 0.9 / 0.999, eps 1e-8, no weight decay): what
    torch.optim.Adam(groups, fused=True).step() computes, bit for bit (tests/test_recon_step.py), for a loop that
    calls it thousands of times on the same small tensors. A parameter without a gradient is skipped that step, as
    torch's Adam does."""

    def __init__(self, groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param_groups = [{**g, "params": list(g["params"])} for g in groups]
        self.betas, self.eps = betas, eps
        self.state: dict[nn.Parameter, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def _state(self, p: nn.Parameter) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if p not in self.state:      # torch's fused Adam: float32 step counter, zero moments like p
            self.state[p] = (torch.zeros((), dtype=torch.float32, device=p.device),
                             torch.zeros_like(p, memory_format=torch.preserve_format),
                             torch.zeros_like(p, memory_format=torch.preserve_format))
        return self.state[p]

    @torch.no_grad()
    def step(self) -> None:
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            steps, avgs, sqs = zip(*(self._state(p) for p in params))
            torch._foreach_add_(list(steps), 1)
            torch._fused_adam_(params, [p.grad for p in params], list(avgs), list(sqs), [], list(steps),
                               amsgrad=False, lr=g["lr"], beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0,
                               eps=self.eps, maximize=False, grad_scale=None, found_inf=None)


_COMPILED: StepLoss | None = None


def compiled_step_loss() -> StepLoss:
    """`step_loss` under torch.compile (one compiled function per process: its graphs serve every unit)."""
    global _COMPILED
    if _COMPILED is None:
        import torch._dynamo.config as dynamo_config

        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        _COMPILED = torch.compile(step_loss, dynamic=False)
    return _COMPILED
