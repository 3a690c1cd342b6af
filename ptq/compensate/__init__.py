"""Closed-form compensation (QwT, QwT-v2, ERQ): after a method's recipe (and reconstruction), per transformer block a
map fitted by least squares to what quantization changed in the block's output is added beside the block (ERQ
instead edits each layer's weights and rounding). Runs as the recipe stage `compensate` (ptq/compensate/stage.py,
a plug-in stage imported by ptq/plugins.py), appended when `compensate.name` is not none; the departures of the
released code are in ptq/compensate/SPEC.md."""
from ptq.compensate import erq, qwt, qwt_v2  # noqa: F401  (register the compensators)
from ptq.compensate.registry import COMPENSATORS, Compensator, Fit, register_compensator

__all__ = ["COMPENSATORS", "Compensator", "Fit", "register_compensator"]
