"""`fisher_dplr` (FIMA-Q, CVPR'25): the block-output error measured by a diagonal-plus-low-rank approximation of
the Fisher information matrix of the (flattened) unit output, shared by all images.

Gradient samples g_m = dL/dO at the float model (L: cross-entropy against labels drawn from the float softmax,
metric.fisher_draws per image, as `fisher`), F = (1/M) sum_m g_m g_m^T (N x N, never formed). Low rank: U =
the top `recon.loss_rank` eigenvectors of F scaled by sqrt(eigenvalue) (an SVD of the M x N sample matrix);
diagonal: D = diag(F) - diag(U U^T) >= 0, so that D + U U^T keeps F's exact diagonal and its top-r spectrum.
Both normalized by mean(diag F). Loss per image: e^T (D + U U^T) e / (N / size of dim 1), times rec_scale -- with
F = I exactly `mse`'s sum over dim 1, mean over the others; with rank 0 the image-averaged `fisher` weight."""
from __future__ import annotations

import torch

from ptq.recon.losses.base import float_capture, register_recon_loss
from ptq.recon.losses.probe import float_logits, output_gradients, sampled_ce


def dplr(samples: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(D [N], U [N, r]) of F = samples^T samples / M for samples [M, N], normalized so that mean(diag F) = 1."""
    g = samples.double()
    m = len(g)
    diag = g.square().sum(0) / m
    scale = diag.mean().clamp(min=1e-300)
    r = min(rank, *g.shape)
    if r > 0:
        _, s, vh = torch.linalg.svd(g / m ** 0.5, full_matrices=False)
        u = vh[:r].T * s[:r]
    else:
        u = g.new_zeros(g.shape[1], 0)
    d = (diag - u.square().sum(1)).clamp(min=0)
    return (d / scale).to(samples.dtype), (u / scale.sqrt()).to(samples.dtype)


def dplr_loss(out: torch.Tensor, target: torch.Tensor, d: torch.Tensor, u: torch.Tensor,
              scale: float) -> torch.Tensor:
    """scale * mean over images of e^T (diag(d) + u u^T) e / (N / out.shape[1])."""
    e = (out - target).flatten(1)
    quad = (e.square() * d).sum(1) + (e @ u).square().sum(1)
    return scale * (quad * out.shape[1] / e.shape[1]).mean()


def _capture(ctx):
    inputs, target, _ = float_capture(ctx)
    fp = float_logits(ctx.model, ctx.x, ctx.batch_size)
    g = output_gradients(ctx.model, ctx.unit, ctx.x, ctx.batch_size,
                         sampled_ce(fp, ctx.fisher_draws, ctx.generator))
    return inputs, target, dplr(g.flatten(2).flatten(0, 1), ctx.rc.loss_rank)


def _criterion(stats, rc):
    d, u = stats
    return lambda out, target, idx: dplr_loss(out, target, d, u, rc.rec_scale)


register_recon_loss("fisher_dplr", "gradient_samples", _capture, _criterion, ("fisher_draws", "loss_rank"))
