"""Published numbers (ImageNet top-1, 32 calibration images) beside ours in ptq.report, for paper models (keys are
timm model names). Each method's own numbers live in its file, ptq/methods/<preset>.yaml (PTQ4ViT's and BasePTQ's
from SPEC.md section 6, RepQ-ViT's from SPEC-repq.md, AdaLog's from SPEC-adalog.md); here: the lookup, PTQ4ViT's
table 1 as a table (its models give the report's paper-model order), and PTQ4ViT's ablation table (its rows are
component switches, not methods).
"""
from __future__ import annotations

from ptq.methods import by_label, methods

TABLE1_METHODS, TABLE1_BITS = ("base_ptq", "ptq4vit"), ("W8A8", "W6A6")


def _table1() -> dict[str, dict]:
    """PTQ4ViT's table 1: model -> {"FP32": top-1, (method label, bits): top-1}, models in the paper's order."""
    table = {}
    for model, fp32 in methods()["fp32"].top1.items():
        row = {"FP32": fp32}
        for preset in TABLE1_METHODS:
            m = methods()[preset]
            row.update({(m.label, bits): m.reference(model, bits) for bits in TABLE1_BITS})
        table[model] = row
    return table


TABLE1: dict[str, dict] = _table1()

# Ablation (PTQ4ViT preset): (HG, ST, GT) -> model -> (W8A8, W6A6). HG = Hessian-guided metric,
# ST = softmax twin, GT = GELU twin. The all-off row equals the BasePTQ column of table 1 in the reference.
ABLATION_ROWS: tuple[tuple[bool, bool, bool], ...] = (
    (False, False, False), (True, False, False), (True, True, False), (True, False, True), (False, True, True),
    (True, True, True),
)
_ABL_MODELS = ("vit_small_patch16_224", "vit_base_patch16_224", "vit_base_patch16_384")
_ABL_VALUES = (
    ((80.47, 70.24), (83.90, 75.67), (85.35, 46.89)),
    ((80.93, 77.20), (83.97, 79.90), (85.42, 79.99)),
    ((81.11, 78.57), (84.07, 80.76), (85.67, 82.01)),
    ((80.84, 76.93), (84.10, 80.82), (85.60, 82.21)),
    ((79.25, 74.07), (83.40, 78.86), (84.35, 80.86)),
    ((81.00, 78.63), (84.25, 81.65), (85.89, 83.19)),
)
ABLATION: dict[tuple[bool, bool, bool], dict[str, tuple[float, float]]] = {
    row: dict(zip(_ABL_MODELS, values)) for row, values in zip(ABLATION_ROWS, _ABL_VALUES)}
ABLATION_BITS = ("W8A8", "W6A6")


def base_model_name(name: str) -> str:
    """timm name without its pretrained tag: 'vit_base_patch16_224.augreg_in21k' -> 'vit_base_patch16_224'."""
    return str(name).split(".", 1)[0]


def table1_reference(model: str, method: str, bits: str | None = None) -> float | None:
    """The published top-1 of the method labelled `method` ("FP32", "BasePTQ", "PTQ4ViT", "RepQ-ViT", "AdaLog":
    the `label` of a ptq/methods/<preset>.yaml) at `bits` ("W8A8", ...) on `model`, from that method's file."""
    names = by_label(method)
    return names.reference(base_model_name(model), bits) if names is not None else None


def uses_quantizer(settings: dict, kind: str) -> bool:
    """Whether a run's flattened settings put the registered quantizer `kind` (ptq.quantizers.QUANTIZERS, e.g.
    twin_softmax) on its operand: the on/off switch `quantizer.<kind>` where the config has one (results.json
    before the operand slots), else any operand slot naming it (`quantizer.slots.<slot>.quantizer`). `settings`
    come through ptq.sweep.effective_config, which already reduces a disabled slot to `{enabled: false}`."""
    switch = settings.get(f"quantizer.{kind}")
    if isinstance(switch, bool):
        return switch
    return any(k.startswith("quantizer.slots.") and k.endswith(".quantizer") and v == kind
               for k, v in settings.items())


def ablation_flags(settings: dict) -> tuple[bool, bool, bool]:
    """(HG, ST, GT) of the ablation table: Hessian-guided metric, twin softmax, twin GELU."""
    return (settings.get("metric.name") == "hessian", uses_quantizer(settings, "twin_softmax"),
            uses_quantizer(settings, "twin_gelu"))


def ablation_reference(model: str, flags: tuple[bool, bool, bool], bits: str) -> float | None:
    pair = ABLATION.get(tuple(flags), {}).get(base_model_name(model))
    if pair is None or bits not in ABLATION_BITS:
        return None
    return pair[ABLATION_BITS.index(bits)]
