"""`aph` (APHQ-ViT, CVPR'25): the squared error weighted by the average perturbation Hessian, a diagonal of the
Hessian of the KL distillation loss (float softmax / T against the model's) with respect to the unit output.

Estimated by central finite differences of the gradient along directions v (Rademacher by default):
  h = v * (g(O + eps v) - g(O - eps v)) / (2 eps) ~ v * (H v), whose mean over v is diag(H) (the off-diagonal
terms cancel for independent signs); averaged over `recon.loss_draws` directions and over the images, |.|, then
normalized to mean 1. `recon.loss_direction=ones` is the reference code's (one direction, all ones, eps 1e-6:
then h is |H 1|, the Hessian's row sums, not its diagonal; SPEC.md)."""
from __future__ import annotations

import torch

from ptq.recon.losses.base import float_capture, normalized, register_recon_loss, squared_error
from ptq.recon.losses.probe import float_logits, kl_to, output_gradients


def directions(kind: str, draws: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """[draws, *shape] perturbation directions: random signs, or all ones (one draw)."""
    if kind == "ones":
        return torch.ones(1, *shape)
    return torch.randint(0, 2, (draws, *shape), generator=generator).float() * 2 - 1


def hessian_vector_diag(model, unit, x, batch_size: int, fp_logits: torch.Tensor, v: torch.Tensor, eps: float,
                        temperature: float) -> torch.Tensor:
    """[draws, len(x), ...]: v * (g(O + eps v) - g(O - eps v)) / (2 eps) for each direction in v, per image."""
    loss = kl_to(fp_logits, temperature)
    rows = []
    for d in v:
        up = output_gradients(model, unit, x, batch_size, loss, (eps * d).to(x.device))[0]
        down = output_gradients(model, unit, x, batch_size, loss, (-eps * d).to(x.device))[0]
        rows.append(d.to(up.device) * (up - down) / (2 * eps))
    return torch.stack(rows)


def _capture(ctx):
    inputs, target, _ = float_capture(ctx)
    rc = ctx.rc
    fp = float_logits(ctx.model, ctx.x, ctx.batch_size)
    v = directions(rc.loss_direction, rc.loss_draws, tuple(target.shape), ctx.generator)
    h = hessian_vector_diag(ctx.model, ctx.unit, ctx.x, ctx.batch_size, fp, v, rc.loss_eps, rc.loss_temp)
    h = h.mean(0)
    # the reference takes |.| per image, then the mean; the signed estimator is averaged first (diag(H) >= 0 here:
    # at the float model the KL's Hessian is its Gauss-Newton part, positive semi-definite)
    h = h.abs().mean(0) if rc.loss_direction == "ones" else h.mean(0).abs()
    return inputs, target, normalized(h.unsqueeze(0))


def _criterion(weight, rc):
    return lambda out, target, idx: squared_error(out, target, weight, rc.rec_scale)


register_recon_loss("aph", "hessian_diagonal", _capture, _criterion,
                    ("loss_draws", "loss_direction", "loss_eps", "loss_temp"))
