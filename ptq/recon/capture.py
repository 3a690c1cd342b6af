"""One unit's inputs and output over a set of images (and the squared task-loss gradient at its output for BRECQ's
Fisher weighting): the capture pass of reconstruction (ptq/recon/stage.py), of its losses (ptq/recon/losses/) and of
compensation (ptq/compensate/)."""
from __future__ import annotations

import torch
from torch import nn

from ptq.errors import PTQError
from ptq.quant.gradients import backward_losses


class _Stop(Exception):
    """Ends a capture pass once the unit has run (nothing after it is needed)."""


Captured = tuple[list[torch.Tensor], torch.Tensor, "torch.Tensor | None"]


def capture_unit(model: nn.Module, unit: nn.Module, x: torch.Tensor, batch_size: int, fisher_draws: int = 0,
                 generator: torch.Generator | None = None) -> Captured:
    """The unit's positional tensor inputs and its output over all of x (and g^2 at the output when fisher_draws
    > 0), with the model's quantizers as they are."""
    ins: list[tuple[torch.Tensor, ...]] = []
    outs: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []

    def hook(mod, args, out):
        ins.append(tuple(a.detach() for a in args if isinstance(a, torch.Tensor)))
        outs.append(out.detach())
        if not fisher_draws:
            raise _Stop
        out = out.detach().requires_grad_(True)
        out.register_hook(lambda g: grads.append(g.detach().square()))
        return out

    handle = unit.register_forward_hook(hook)
    g2: list[torch.Tensor] = []
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            if fisher_draws:
                with torch.enable_grad():
                    logits = model(xb)
                    n = backward_losses("fisher", logits, logits.detach(), torch.empty(0), fisher_draws, generator)
                g2.append(torch.stack(grads[-n:]).mean(0))
                grads.clear()
            else:
                try:
                    with torch.no_grad():
                        model(xb)
                except _Stop:
                    pass
    finally:
        handle.remove()
    if len(outs) * batch_size < len(x):
        raise PTQError(f"reconstruction unit {type(unit).__name__} did not run once per batch")
    inputs = [torch.cat([b[k] for b in ins]) for k in range(len(ins[0]))]
    weight = None
    if g2:
        weight = torch.cat(g2)
        weight = weight / weight.mean().clamp(min=1e-30)
    return inputs, torch.cat(outs), weight
