"""Task losses whose gradient g = dL/dO at each layer output feeds the Hessian metric (spec section 4).

All losses are summed over the batch, so each image's gradient is its own (independent of the sub-batch size).
- kl_self:   KL(softmax(fp logits) || softmax(model logits)) with the model as it is (float in parallel mode:
             the reference's behaviour, whose gradient is only round-off);
- kl_quant:  the same KL on the model quantized with its initial min-max parameters (as BRECQ);
- pseudo_ce: cross-entropy against the float model's top-1 labels;
- label_ce:  cross-entropy against the calibration images' true labels;
- fisher:    cross-entropy against labels sampled from the float model's softmax, g^2 averaged over K draws.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ptq.metrics import NEEDS_GRAD

GRAD_SOURCES = ("kl_self", "kl_quant", "pseudo_ce", "label_ce", "fisher")


def backward_losses(source: str, logits: torch.Tensor, fp_logits: torch.Tensor, labels: torch.Tensor,
                    draws: int = 1, generator: torch.Generator | None = None) -> int:
    """Run the backward pass(es) for `source`; returns how many (the g^2 of each is averaged)."""
    if source in ("kl_self", "kl_quant"):
        logp_fp = F.log_softmax(fp_logits, -1)
        loss = (logp_fp.exp() * (logp_fp - F.log_softmax(logits, -1))).sum()
        loss.backward()
        return 1
    if source == "pseudo_ce":
        F.cross_entropy(logits, fp_logits.argmax(-1), reduction="sum").backward()
        return 1
    if source == "label_ce":
        F.cross_entropy(logits, labels, reduction="sum").backward()
        return 1
    if source == "fisher":
        probs = F.softmax(fp_logits.double(), -1)
        for k in range(draws):
            y = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)
            F.cross_entropy(logits, y, reduction="sum").backward(retain_graph=k < draws - 1)
        return draws
    raise ValueError(f"unknown gradient source '{source}'; valid: {', '.join(GRAD_SOURCES)}")


def gradient_reads(config: dict) -> list[str]:
    """The metric settings a capture for the job `config` reads: the gradient source only for a metric that needs
    a gradient (the Hessian metric), the number of draws only for the `fisher` source (or a null source, which
    resolves from quantizer.compat)."""
    metric = config.get("metric") or {}
    if metric.get("name") not in NEEDS_GRAD:
        return []
    return ["metric.grad"] + (["metric.fisher_draws"] if metric.get("grad") in (None, "fisher") else [])
