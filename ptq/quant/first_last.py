"""`bits.first_last`: the bit width of the first and last layers, a setting papers disagree on.

Many papers keep the patch embedding and the classifier head at 8 bits while the rest is at W4A4 (RepQ-ViT, the
reference codes' `w_bit=8` for the first and last layers); PTQ4ViT quantizes them like every other layer. The
switch makes that choice one named, recorded setting (results.json: config.bits.first_last and
ptq_config.first_last; the resolved slots in ptq_config.slots show the bits each operand got):
- null (off): each of these slots keeps its own `bits` (default bits.w for weights, bits.a for inputs);
- an integer B (8: the usual choice): the slots in FIRST_LAST_SLOTS get B bits, whatever their own `bits` say
  and also where they fall back to a parent slot (e.g. a disabled head_weight uses `weight`'s quantizer, at B bits).
  A slot whose quantizer is null (a float operand, e.g. BasePTQ's image) stays float: the switch sets bits, it
  does not quantize an operand the method leaves float.
"""
from __future__ import annotations

import dataclasses

# The slots (ptq/quant/slots.py) of the first and last layers: the patch embedding's weight and its input (the
# image), the classifier head's weight and its input.
FIRST_LAST_SLOTS = ("conv_weight", "image", "head_weight", "head_input")


def apply_first_last(specs: dict, first_last: int | None) -> dict:
    """The resolved slot specs with FIRST_LAST_SLOTS at `first_last` bits (None: unchanged)."""
    if first_last is None:
        return specs
    return {name: dataclasses.replace(spec, bits=first_last) if name in FIRST_LAST_SLOTS else spec
            for name, spec in specs.items()}
