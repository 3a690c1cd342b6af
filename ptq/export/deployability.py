"""Whether a quantized model runs as standard integer operators, and why not: read from what each quantizer
declares (`integer_op`, `integer_form`; ptq/quantizers/base.py), recorded in results.json as `deployability`."""
from __future__ import annotations

from torch import nn

from ptq.quant.wrap import quant_ops
from ptq.quantizers.base import NotDeployable


def deployability(model: nn.Module) -> dict:
    """{"deployable": bool, "simulation_only": {slot: reason}, "float_ops": [op names whose matmul stays float]}.

    Deployable = every active quantizer maps to QuantizeLinear / DequantizeLinear. An op with an operand left float
    (e.g. the patch-embedding conv with a float image) is deployable but runs in float: listed in `float_ops`."""
    blocked: dict[str, str] = {}
    float_ops: list[str] = []
    for name, op in quant_ops(model).items():
        floats = False
        for operand in op.operands:
            q = op.quantizer(operand)
            if q is None or not q.initialized:
                floats = True
                continue
            slot = getattr(q, "slot", operand)
            try:
                q.integer_form()
            except NotDeployable as e:
                blocked.setdefault(slot, f"{e}")
        if floats:
            float_ops.append(name)
    return {"deployable": not blocked, "simulation_only": blocked, "float_ops": float_ops}


def refusal(report: dict) -> str:
    """The one-line reason a run cannot be exported."""
    why = "; ".join(f"slot {slot}: {reason}" for slot, reason in sorted(report["simulation_only"].items()))
    return f"not deployable: {why}"


