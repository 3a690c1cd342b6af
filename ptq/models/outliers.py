"""Function-preserving activation outliers for timm ViT / DeiT / Swin models (stress test-beds, issue 10).

Pretrained ViTs have a few post-LayerNorm channels whose range is many times the typical channel's; the embedded
test-bed models do not (max/median channel range 1.6-2.1x). For every LayerNorm that feeds a linear layer
(`norm1 -> attn.qkv`, `norm2 -> mlp.fc1`, Swin's patch-merging `norm -> reduction`), this transform multiplies the
affine weight and bias of chosen channels c by k_c and divides the matching input columns of the linear by k_c:

    LN'(x)_c = k_c * LN(x)_c,   W'[:, c] = W[:, c] / k_c   =>   W' LN'(x) = W LN(x)

so the float model computes the same function while the post-LayerNorm activations (the inputs the quantizers
see) get the chosen inter-channel variation: channel c's range grows exactly by k_c.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ptq.errors import PTQError, choices

LAWS = ("loguniform", "pareto")
NORM_KINDS = ("norm1", "norm2", "merge")
PROFILES = ("none", "mild", "deit_like", "severe", "custom")


@dataclass
class OutliersConfig:
    """`model.outliers`: which LayerNorm channels get which factors. The defaults leave the model unchanged."""

    profile: str = "none"          # a name for the report ("custom" for hand-set values); "none" = off
    fraction: float = 0.0          # fraction of each LayerNorm's channels that become outliers (at least 1 if > 0)
    law: str = "loguniform"        # factor law: loguniform on [low, high], or pareto (tail index `shape`) from low
    low: float = 1.0               # smallest factor
    high: float = 1.0              # largest factor (pareto draws are clipped to it)
    shape: float = 1.0             # pareto tail index (smaller = heavier tail); unused by loguniform
    norms: list[str] = field(default_factory=lambda: list(NORM_KINDS))  # which LayerNorm -> linear pairs
    seed: int = 0                  # channel choice and factors (per LayerNorm, from seed and its position)


def outliers_config(cfg) -> OutliersConfig:
    """An OutliersConfig from a DictConfig / dict / None, validated; one-line PTQError naming a bad value."""
    if cfg is None:
        return OutliersConfig()
    if isinstance(cfg, OutliersConfig):
        oc = cfg
    else:
        from omegaconf import DictConfig, OmegaConf

        raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        known = OutliersConfig.__dataclass_fields__
        unknown = [k for k in raw if k not in known]
        if unknown:
            raise PTQError(f"unknown key model.outliers.{unknown[0]}; valid: {choices(known)}")
        oc = OutliersConfig(**raw)
        oc.norms = list(oc.norms)
    _validate(oc)
    return oc


def _validate(oc: OutliersConfig) -> None:
    if oc.profile not in PROFILES:
        raise PTQError(f"unknown model.outliers.profile '{oc.profile}'; valid: {choices(PROFILES)}")
    if oc.law not in LAWS:
        raise PTQError(f"unknown model.outliers.law '{oc.law}'; valid: {choices(LAWS)}")
    if not isinstance(oc.fraction, (int, float)) or not 0.0 <= oc.fraction <= 1.0:
        raise PTQError(f"model.outliers.fraction={oc.fraction} must be in [0, 1]")
    for key in ("low", "high", "shape"):
        value = getattr(oc, key)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise PTQError(f"model.outliers.{key}={value} must be a finite number > 0")
    if oc.low > oc.high:
        raise PTQError(f"model.outliers.low={oc.low} exceeds model.outliers.high={oc.high}")
    bad = [n for n in oc.norms if n not in NORM_KINDS]
    if bad:
        raise PTQError(f"unknown model.outliers.norms entry '{bad[0]}'; valid: {choices(NORM_KINDS)}")


def enabled(oc: OutliersConfig) -> bool:
    """Whether the transform changes anything: a profile other than none, some channels, a factor other than 1."""
    return oc.profile != "none" and oc.fraction > 0 and (oc.low, oc.high) != (1.0, 1.0) and bool(oc.norms)


def norm_linear_pairs(model: nn.Module, linear_types: tuple[type[nn.Module], ...] = (nn.Linear,)
                      ) -> list[tuple[str, str, nn.LayerNorm, nn.Module]]:
    """(kind, name, LayerNorm, the linear reading its output) for every such pair of a timm ViT / DeiT / Swin, in
    module order: blocks' norm1 -> attn.qkv and norm2 -> mlp.fc1, patch merging's norm -> reduction. The linear
    must be one of `linear_types` (a wrapped model's quantized linears: pass their class; used by RepQ-ViT's
    reparameterization, ptq/quant/stages/repq.py)."""
    pairs = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        attn, mlp = getattr(module, "attn", None), getattr(module, "mlp", None)
        if isinstance(getattr(module, "norm1", None), nn.LayerNorm) and isinstance(getattr(attn, "qkv", None),
                                                                                   linear_types):
            pairs.append(("norm1", f"{prefix}norm1", module.norm1, attn.qkv))
        if isinstance(getattr(module, "norm2", None), nn.LayerNorm) and isinstance(getattr(mlp, "fc1", None),
                                                                                   linear_types):
            pairs.append(("norm2", f"{prefix}norm2", module.norm2, mlp.fc1))
        if isinstance(getattr(module, "norm", None), nn.LayerNorm) and isinstance(getattr(module, "reduction", None),
                                                                                  linear_types):
            pairs.append(("merge", f"{prefix}norm", module.norm, module.reduction))
    return pairs


def draw_factors(oc: OutliersConfig, channels: int, index: int) -> torch.Tensor:
    """Per-channel factors [channels] of the `index`-th LayerNorm: 1 except on round(fraction * channels) (at least
    one) channels drawn at random, whose factors follow `oc.law`. Deterministic in (seed, index)."""
    g = torch.Generator().manual_seed(int(oc.seed) * 100_003 + index)
    k = torch.ones(channels, dtype=torch.float64)
    count = min(channels, max(1, round(oc.fraction * channels)))
    chosen = torch.randperm(channels, generator=g)[:count]
    u = torch.rand(count, generator=g, dtype=torch.float64)
    if oc.law == "loguniform":
        k[chosen] = torch.exp(math.log(oc.low) + u * (math.log(oc.high) - math.log(oc.low)))
    else:  # pareto: P(K > x) = (low / x) ** shape for x >= low, clipped at high
        k[chosen] = (oc.low * (1.0 - u).pow(-1.0 / oc.shape)).clamp(max=oc.high)
    return k


@torch.no_grad()
def apply_outliers(model: nn.Module, cfg) -> dict[str, torch.Tensor]:
    """Scale the chosen post-LayerNorm channels of `model` in place (function preserved); returns the factors per
    LayerNorm name (empty when the profile is off)."""
    oc = outliers_config(cfg)
    if not enabled(oc):
        return {}
    pairs = norm_linear_pairs(model)
    if not pairs:
        raise PTQError(f"model.outliers.profile={oc.profile}: the model has no LayerNorm -> linear pair "
                       f"({', '.join(NORM_KINDS)}); the transform supports timm ViT / DeiT / Swin")
    factors = {}
    for index, (kind, name, norm, linear) in enumerate(pairs):
        if kind not in oc.norms:
            continue
        if norm.weight is None:
            raise PTQError(f"model.outliers: LayerNorm {name} has no affine weight to scale")
        k = draw_factors(oc, norm.weight.numel(), index)
        norm.weight.mul_(k.to(norm.weight))
        if norm.bias is not None:
            norm.bias.mul_(k.to(norm.bias))
        linear.weight.div_(k.to(linear.weight))
        factors[name] = k.float()
    return factors
