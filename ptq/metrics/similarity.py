"""Output-similarity metrics (spec section 4): mse, l1, cosine, pearson and the reference's weighted L2s."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ptq.metrics.base import reduce_elementwise, reduce_vectors, register_metric


@register_metric("mse")
def mse(out_hat: torch.Tensor, out: torch.Tensor, g2: torch.Tensor | None = None) -> torch.Tensor:
    """-(O - Ô)^2"""
    return reduce_elementwise(out_hat.sub_(out).square_().neg_())


@register_metric("l1")
def l1(out_hat: torch.Tensor, out: torch.Tensor, g2: torch.Tensor | None = None) -> torch.Tensor:
    """-|O - Ô|"""
    return reduce_elementwise(out_hat.sub_(out).abs_().neg_())


@register_metric("cosine")
def cosine(out_hat: torch.Tensor, out: torch.Tensor, g2: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarity of O and Ô along the feature dimension."""
    return reduce_vectors(F.cosine_similarity(out_hat, out.expand_as(out_hat), dim=-1, eps=1e-8))


@register_metric("pearson")
def pearson(out_hat: torch.Tensor, out: torch.Tensor, g2: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine of the mean-centred vectors (Pearson correlation along the feature dimension)."""
    a = out_hat - out_hat.mean(dim=-1, keepdim=True)
    b = out - out.mean(dim=-1, keepdim=True)
    return reduce_vectors(F.cosine_similarity(a, b.expand_as(a), dim=-1, eps=1e-8))


@register_metric("linear_weighted_l2")
def linear_weighted_l2(out_hat: torch.Tensor, out: torch.Tensor, g2: torch.Tensor | None = None) -> torch.Tensor:
    """-|O| (O - Ô)^2"""
    return reduce_elementwise(out_hat.sub_(out).square_().mul_(out.abs()).neg_())


@register_metric("square_weighted_l2")
def square_weighted_l2(out_hat: torch.Tensor, out: torch.Tensor, g2: torch.Tensor | None = None) -> torch.Tensor:
    """-(O (O - Ô))^2"""
    return reduce_elementwise(out_hat.sub_(out).mul_(out).square_().neg_())
