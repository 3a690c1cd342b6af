"""The embedded test-bed: small timm ViT and Swin models for 28x28 grey Fashion-MNIST images.

Registered in timm's registry (`@register_model`), so `timm.create_model("fmnist_vit")` works like any timm
name and `model.kwargs` override any constructor argument.
"""
from __future__ import annotations

from timm.models import register_model
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from ptq.data.fashion_mnist import MEAN, STD

_FMNIST_CFG = {"input_size": (1, 28, 28), "mean": (MEAN,), "std": (STD,), "crop_pct": 1.0,
               "interpolation": "bilinear", "num_classes": 10, "first_conv": "patch_embed.proj"}


def _clean(kwargs: dict) -> dict:
    """Drop the loader arguments timm's factory passes to every entry point."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "feature_cfg"):
        kwargs.pop(key, None)
    return kwargs


def _set_cfg(model, name: str):
    model.pretrained_cfg = dict(_FMNIST_CFG, architecture=name)
    model.default_cfg = model.pretrained_cfg
    return model


@register_model
def fmnist_vit(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT for Fashion-MNIST: 28x28x1, patch 4 (7x7=49 tokens + class token), width 96, 4 blocks, 3 heads."""
    args = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=96, depth=4, num_heads=3,
                mlp_ratio=4.0, class_token=True, global_pool="token", qkv_bias=True)
    args.update(_clean(kwargs))
    return _set_cfg(VisionTransformer(**args), "fmnist_vit")


@register_model
def fmnist_swin(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Swin for Fashion-MNIST: patch 2 (14x14 tokens), window 7 (2x2 windows, shifted), then patch merging to 7x7
    (one window): two stages, so shifted windows, masks and patch merging are all exercised."""
    args = dict(img_size=28, patch_size=2, in_chans=1, num_classes=10, window_size=7, embed_dim=48,
                depths=(2, 2), num_heads=(3, 6), mlp_ratio=4.0)
    args.update(_clean(kwargs))
    return _set_cfg(SwinTransformer(**args), "fmnist_swin")


TESTBED_MODELS = ("fmnist_vit", "fmnist_swin")
