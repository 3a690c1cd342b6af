"""Models: timm ViT / DeiT / Swin by name, plus the embedded Fashion-MNIST test-bed models."""
from ptq.models.registry import build_model, known_models, resolve_path
from ptq.models.testbed import TESTBED_MODELS

__all__ = ["build_model", "known_models", "resolve_path", "TESTBED_MODELS"]
