"""`fisher_dplr_official` (FIMA-Q's code, github ShiheWang/FIMA-Q `utils/block_recon.py`): the DPLR Fisher loss as
the reference code computes it -- re-estimated `recon.loss_rank` (k) times while the unit is optimized, from the
*quantized* unit, with a secant (quasi-Newton) low-rank term. What it departs from and why: SPEC.md, `fisher_dplr`.

Refresh j (at optimization steps 0, m, 2m, ..., m = iters // k): every quantizer outside the unit off, the unit as
it is being optimized (soft rounding, learned steps, QDrop draws), the reconstruction images run in batches of
recon.batch_size; g = dKL(softmax(z_fp / T) || softmax(z / T)) / dO at the unit output O (T = recon.loss_temp);
G_j = mean over images of |g|, Delta_j = mean over images of |O - O_fp| (each 1 x N, N the output's size per
image), stacked over refreshes (j x N); B^-1 = (Delta Delta^T)^-1 (float32, as the code).
Loss with e = |O_q - O_fp| per image (1 x N): loss_1 = mean_b (e G^T) B^-1 (G e^T) (low rank, rank j <= k),
loss_2 = mean(e^2 * mean_j G_j) (diagonal); rec = rec_scale (loss_1 / loss_1^0 + loss_2 / loss_2^0), ^0 the
values at the first step after the latest refresh (detached): each term restarts at 1 after every refresh.
A stateful criterion: it counts its calls (the optimization steps) and refreshes itself; one per unit."""
from __future__ import annotations

import torch
from torch import nn

from ptq.errors import PTQError
from ptq.quant.modules import QuantOp
from ptq.recon.losses.base import float_capture, register_recon_loss
from ptq.recon.losses.probe import float_logits, kl_to, output_gradients


class SecantFisher:
    """The refreshing state of one unit: the k refresh gradients G, output gaps Delta and (Delta Delta^T)^-1."""

    def __init__(self, model: nn.Module, unit: nn.Module, x: torch.Tensor, target: torch.Tensor,
                 fp_logits: torch.Tensor, batch_size: int, rank: int, iters: int, temperature: float):
        self.model, self.unit, self.x, self.target = model, unit, x, target
        self.fp_logits, self.batch_size, self.temperature = fp_logits, batch_size, temperature
        self.rank = rank
        self.every = max(iters // max(rank, 1), 1)   # the code's floor(iters / k) (it needs iters >= k)
        self.g = target.new_zeros(0, target[0].numel())
        self.delta = self.g.clone()
        self.inverse = self.g.new_zeros(0, 0)
        self.step = 0
        self.init: tuple[torch.Tensor, torch.Tensor] | None = None

    def refresh(self) -> None:
        """One more row of G and Delta from the unit as it is now, the rest of the model float."""
        outside = [q for op in self.model.modules() if isinstance(op, QuantOp) and not _inside(op, self.unit)
                   for q in op.quantizers().values()]
        was = [q.enabled for q in outside]
        outs: list[torch.Tensor] = []
        handle = self.unit.register_forward_hook(lambda m, a, o: outs.append(o.detach()))
        try:
            for q in outside:
                q.enabled = False
            g = output_gradients(self.model, self.unit, self.x, self.batch_size,
                                 kl_to(self.fp_logits, self.temperature))[0]
        finally:
            handle.remove()
            for q, e in zip(outside, was):
                q.enabled = e
        g = g.flatten(1).abs().mean(0, keepdim=True)
        d = (torch.cat(outs) - self.target).flatten(1).abs().mean(0, keepdim=True)
        self.g, self.delta = torch.cat([self.g, g]), torch.cat([self.delta, d])
        b = self.delta @ self.delta.T
        try:
            self.inverse = torch.linalg.inv(b)
        except torch.linalg.LinAlgError:     # an exactly singular B (the unit unchanged between refreshes): the
            self.inverse = torch.linalg.pinv(b)   # code stops with an error; the pseudo-inverse keeps the run going
        self.init = None

    def __call__(self, out: torch.Tensor, target: torch.Tensor, rec_scale: float) -> torch.Tensor:
        if self.step % self.every == 0:
            self.refresh()
        self.step += 1
        return secant_loss(out, target, self, rec_scale)


def _inside(op: nn.Module, unit: nn.Module) -> bool:
    return any(op is m for m in unit.modules())


def secant_terms(out: torch.Tensor, target: torch.Tensor, g: torch.Tensor,
                 inverse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss_1, loss_2) for a batch: mean_b (e G^T) B^-1 (G e^T) and mean(e^2 * mean_j G_j), e = |out - target|."""
    e = (out - target).abs().flatten(1)
    a = e @ g.T
    return ((a @ inverse) * a).sum(1).mean(), (e.square() * g.mean(0)).mean()


def secant_loss(out: torch.Tensor, target: torch.Tensor, state: SecantFisher, rec_scale: float) -> torch.Tensor:
    """rec_scale (loss_1 / loss_1^0 + loss_2 / loss_2^0), ^0 recorded at the first call after a refresh."""
    l1, l2 = secant_terms(out, target, state.g, state.inverse)
    if state.init is None:
        state.init = (l1.detach(), l2.detach())
    return rec_scale * (l1 / state.init[0] + l2 / state.init[1])


def _capture(ctx):
    if ctx.rc.compile or ctx.rc.precision != "float32":
        raise PTQError("recon.loss=fisher_dplr_official refreshes itself between optimization steps, which the "
                       "compiled or bfloat16 step cannot hold; valid: recon.compile=false recon.precision=float32")
    inputs, target, _ = float_capture(ctx)
    fp = float_logits(ctx.model, ctx.x, ctx.batch_size)
    state = SecantFisher(ctx.model, ctx.unit, ctx.x, target, fp, ctx.rc.batch_size, ctx.rc.loss_rank,
                         ctx.rc.iters, ctx.rc.loss_temp)
    return inputs, target, state


def _criterion(state, rc):
    return lambda out, target, idx: state(out, target, rc.rec_scale)


register_recon_loss("fisher_dplr_official", "refreshed_gradients", _capture, _criterion,
                    ("loss_rank", "loss_temp"))
