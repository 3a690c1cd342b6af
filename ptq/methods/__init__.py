"""Each method's own names: `ptq/methods/<preset>.yaml`, beside the preset `conf/quantizer/<preset>.yaml`, holds
its display label in reports, its position among the methods in report tables, and its published reference
numbers (model -> bits -> top-1, with their source). ptq.report and ptq.reference_results read them, so a new
method adds its names here without editing either. A preset without a file is shown by its name, after the others.

These names are not part of a job's config: renaming a method relabels every earlier result and reruns no job.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ptq.errors import PTQError

METHODS_DIR = Path(__file__).resolve().parent
KEYS = ("label", "order", "reference")
REFERENCE_KEYS = ("source", "top1")


@dataclass(frozen=True)
class MethodNames:
    """One preset's names: `top1` maps a timm model to {bits label: top-1}, or to a top-1 for the float model."""

    preset: str
    label: str
    order: float
    source: str = ""
    top1: dict = field(default_factory=dict)

    def reference(self, model: str, bits: str | None = None) -> float | None:
        value = self.top1.get(model)
        if isinstance(value, dict):
            return value.get(bits)
        return value


def _read(path: Path) -> MethodNames:
    data = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(data) - set(KEYS))
    reference = data.get("reference") or {}
    unknown += sorted(f"reference.{k}" for k in set(reference) - set(REFERENCE_KEYS))
    if unknown or not isinstance(data.get("label"), str):
        raise PTQError(f"{path}: unknown key {unknown[0]}; valid: {', '.join(KEYS)}, reference.source, reference.top1"
                       if unknown else f"{path}: label must be a string; valid: e.g. label: PTQ4ViT")
    return MethodNames(path.stem, data["label"], float(data.get("order", float("inf"))),
                       str(reference.get("source", "")), dict(reference.get("top1") or {}))


@functools.cache
def methods() -> dict[str, MethodNames]:
    """preset -> its names, in report order (by `order`, then by preset name)."""
    found = [_read(p) for p in sorted(METHODS_DIR.glob("*.yaml"))]
    return {m.preset: m for m in sorted(found, key=lambda m: (m.order, m.preset))}


def method_labels() -> dict[str, str]:
    """preset -> display label, in report order."""
    return {preset: m.label for preset, m in methods().items()}


def by_label(label: str) -> MethodNames | None:
    return next((m for m in methods().values() if m.label == label), None)
