"""Published numbers (ImageNet top-1, 32 calibration images): PTQ4ViT's from SPEC.md section 6, RepQ-ViT's from
SPEC-repq.md section 6, AdaLog's from SPEC-adalog.md section 6.

`ptq.report` puts them beside ours for paper models (keys are timm model names). Nothing else reads them.
"""
from __future__ import annotations

# Table 1, from the reference README: model -> {"FP32": top-1, (method, bits): top-1}.
_T1_COLUMNS = ("FP32", ("BasePTQ", "W8A8"), ("BasePTQ", "W6A6"), ("PTQ4ViT", "W8A8"), ("PTQ4ViT", "W6A6"))
_T1_ROWS = {
    "vit_small_patch32_224": (75.99, 73.61, 60.14, 75.58, 71.91),
    "vit_small_patch16_224": (81.39, 80.47, 70.24, 81.00, 78.63),
    "vit_base_patch16_224": (84.54, 83.90, 75.67, 84.25, 81.65),
    "vit_base_patch16_384": (86.00, 85.35, 46.89, 85.83, 83.35),
    "deit_small_patch16_224": (79.80, 77.65, 72.27, 79.47, 76.28),
    "deit_base_patch16_224": (81.80, 80.95, 78.79, 81.48, 80.25),
    "deit_base_patch16_384": (83.11, 82.33, 68.44, 82.97, 81.55),
    "swin_tiny_patch4_window7_224": (81.39, 80.96, 78.46, 81.25, 80.47),
    "swin_small_patch4_window7_224": (83.23, 82.76, 81.74, 83.11, 82.38),
    "swin_base_patch4_window7_224": (85.27, 84.79, 83.35, 85.15, 84.01),
    "swin_base_patch4_window12_384": (86.44, 86.17, 85.23, 86.39, 85.39),
}
TABLE1: dict[str, dict] = {model: dict(zip(_T1_COLUMNS, values)) for model, values in _T1_ROWS.items()}

# PTQ4ViT at W4A4 as quoted by later papers (never published by the authors; SPEC.md section 6, last line).
W4A4_QUOTED: dict[str, float] = {
    "vit_small_patch16_224": 42.57, "vit_base_patch16_224": 30.69, "deit_tiny_patch16_224": 36.96,
    "deit_small_patch16_224": 34.08, "deit_base_patch16_224": 64.39, "swin_small_patch4_window7_224": 76.09,
    "swin_base_patch4_window7_224": 74.02,
}

# RepQ-ViT (SPEC-repq.md section 6, from its reference's README; 32 calibration images): model -> bits -> top-1.
# Its FP32 column differs from table 1's by up to 0.05 (timm versions); ours are compared with table 1's FP32.
_REPQ_ROWS = {
    "vit_small_patch16_224": (65.05, 80.43), "vit_base_patch16_224": (68.48, 83.62),
    "deit_tiny_patch16_224": (57.43, 70.76), "deit_small_patch16_224": (69.03, 78.90),
    "deit_base_patch16_224": (75.61, 81.27), "swin_tiny_patch4_window7_224": (72.31, 80.69),
    "swin_small_patch4_window7_224": (79.45, 82.79),
}
REPQ_VIT: dict[str, dict[str, float]] = {m: {"W4A4": w4, "W6A6": w6} for m, (w4, w6) in _REPQ_ROWS.items()}

# AdaLog (SPEC-adalog.md section 6, its reference's README; calibration only, 32 images): model -> bits -> top-1.
_ADALOG_ROWS = {
    "vit_small_patch16_224": (13.88, 72.75, 80.91), "vit_base_patch16_224": (37.91, 79.68, 84.80),
    "deit_tiny_patch16_224": (31.56, 63.52, 71.38), "deit_small_patch16_224": (24.47, 72.06, 79.39),
    "deit_base_patch16_224": (57.45, 78.03, 81.55), "swin_small_patch4_window7_224": (64.41, 80.77, 83.19),
    "swin_base_patch4_window7_224": (69.75, 82.47, 85.09),
}
ADALOG: dict[str, dict[str, float]] = {m: {"W3A3": w3, "W4A4": w4, "W6A6": w6}
                                       for m, (w3, w4, w6) in _ADALOG_ROWS.items()}

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
    """The reference top-1 of `method` ("FP32", "BasePTQ", "PTQ4ViT", "RepQ-ViT", "AdaLog") at `bits` ("W8A8", ...) on
    `model`."""
    model = base_model_name(model)
    if method == "FP32":
        return TABLE1.get(model, {}).get("FP32")
    if method == "PTQ4ViT" and bits == "W4A4":
        return W4A4_QUOTED.get(model)
    if method == "RepQ-ViT":
        return REPQ_VIT.get(model, {}).get(bits)
    if method == "AdaLog":
        return ADALOG.get(model, {}).get(bits)
    return TABLE1.get(model, {}).get((method, bits))


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
