"""Measured activation statistics of a float model on a few images: per-channel ranges after each LayerNorm that
feeds a linear (what a stress profile is tuned to), and samples of the post-softmax and post-GELU values."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ptq.models.outliers import norm_linear_pairs


@dataclass
class ActivationStats:
    """ch_min / ch_max: per-channel min / max over all tokens, per LayerNorm name; softmax / gelu: flattened samples
    (at most `max_samples` values per module) of the attention probabilities and of the GELU outputs."""

    ch_min: dict[str, torch.Tensor] = field(default_factory=dict)
    ch_max: dict[str, torch.Tensor] = field(default_factory=dict)
    softmax: dict[str, torch.Tensor] = field(default_factory=dict)
    gelu: dict[str, torch.Tensor] = field(default_factory=dict)

    def ranges(self) -> dict[str, torch.Tensor]:
        return {n: self.ch_max[n] - self.ch_min[n] for n in self.ch_max}


def range_ratio(ranges: torch.Tensor) -> float:
    """max / median of the per-channel ranges: the inter-channel variation a profile is tuned to (the median of an
    even count is the mean of the middle two)."""
    return float(ranges.max() / torch.quantile(ranges.double(), 0.5).clamp(min=1e-12))


def _sample(t: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    flat = t.detach().reshape(-1).float().cpu()
    return flat if flat.numel() <= n else flat[torch.randperm(flat.numel(), generator=g)[:n]]


@torch.no_grad()
def measure(model: nn.Module, images: torch.Tensor, batch_size: int = 64, max_samples: int = 200_000,
            seed: int = 0) -> ActivationStats:
    """Run `images` through `model` (eval, unfused attention so the probabilities exist as a tensor) and collect
    the statistics; the model's attention flags are restored afterwards."""
    stats, hooks, g = ActivationStats(), [], torch.Generator().manual_seed(seed)

    def on_norm(name):
        def hook(_m, _inp, out):
            flat = out.detach().reshape(-1, out.shape[-1]).float()
            lo, hi = flat.min(0).values.cpu(), flat.max(0).values.cpu()
            stats.ch_min[name] = torch.minimum(stats.ch_min.get(name, lo), lo)
            stats.ch_max[name] = torch.maximum(stats.ch_max.get(name, hi), hi)
        return hook

    def collect(store, name):
        def hook(_m, _inp, out):
            prev = store.get(name)
            new = _sample(out, max_samples, g)
            store[name] = new if prev is None else _sample(torch.cat([prev, new]), max_samples, g)
        return hook

    fused = {}
    for _, name, norm, _ in norm_linear_pairs(model):
        hooks.append(norm.register_forward_hook(on_norm(name)))
    for name, module in model.named_modules():
        if hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module):
            fused[module] = module.fused_attn
            module.fused_attn = False
            hooks.append(module.attn_drop.register_forward_hook(collect(stats.softmax, name)))
        if isinstance(module, nn.GELU):
            hooks.append(module.register_forward_hook(collect(stats.gelu, name)))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size].to(device))
    finally:
        for h in hooks:
            h.remove()
        for module, flag in fused.items():
            module.fused_attn = flag
        model.train(was_training)
    return stats
