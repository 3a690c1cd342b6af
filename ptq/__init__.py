"""PTQ lab: post-training quantization of vision transformers (PTQ4ViT and friends)."""

__version__ = "0.1.0"
