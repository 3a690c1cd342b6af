"""Batched evaluation: logits over a test iterator, top-1/top-5, agreement and KL against float logits."""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from tqdm import tqdm

# The config keys the evaluation of every job reads (the model, the test data and its batches, the seed, the
# device); ptq/job_identity.py adds them to every job's identity.
EVALUATION_READS = ("model", "data", "eval", "seed", "device")


@torch.no_grad()
def evaluate_logits(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    device: torch.device | str = "cpu", progress: bool = True, total: int | None = None,
                    desc: str = "eval") -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model` over all batches; returns (logits float32 [N,C] on CPU, labels [N])."""
    logits, labels = [], []
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, mininterval=1.0, leave=False)
    for x, y in batches:
        out = model(x.to(device, non_blocking=True))
        logits.append(out.float().cpu())
        labels.append(y.cpu())
        bar.update(len(y))
    bar.close()
    return torch.cat(logits), torch.cat(labels)


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(-1) == labels).float().mean().item()


def topk(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> float:
    k = min(k, logits.shape[-1])
    return 100.0 * (logits.topk(k, -1).indices == labels[:, None]).any(-1).float().mean().item()


def agreement(logits: torch.Tensor, ref_logits: torch.Tensor) -> float:
    """Share (in %) of images where the quantized and the float top-1 agree."""
    return 100.0 * (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean().item()


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor) -> float:
    """Mean KL(float || quantized) of the output distributions."""
    ref_logp = F.log_softmax(ref_logits.double(), -1)
    logp = F.log_softmax(logits.double(), -1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean().item()
