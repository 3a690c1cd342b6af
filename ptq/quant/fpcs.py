"""Beam search over quantizer parameters: AdaLog's Fast Progressive Combining Search (FPCS, SPEC-adalog.md 3.4).

A beam-searched quantizer (`beam_searched = True`) returns a plan: a list of stages (make candidates from the
survivors of the stage before, how many survivors to keep). Each stage's candidates [C, G, K] (one parameter
vector per scale group) are scored in one batched call -- the layer's output under every candidate (the search's
`evaluate_candidates`, chunked by memory) or the operand's own squared error -- and the best `keep` per scale
group survive. A single output group (a whole-tensor input) ranks the candidates jointly.

`rescore_centres`: the reference never scores a survivor again (its children replace it, so the final pick can be
worse than an earlier best; quirk 7); the clean form adds the survivors to every later stage's candidates.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ptq.quantizers import Quantizer

Plan = list[tuple[Callable[[torch.Tensor | None], torch.Tensor], int]]


def self_scores(q: Quantizer, x: torch.Tensor, cand: torch.Tensor, chunk_mb: float) -> torch.Tensor:
    """-mean (x - Q(x))^2 per scale group of q for every candidate -> [C, G] (weight / input self score)."""
    per = max(1, x.numel() * 3)
    step = max(1, int(chunk_mb * 2 ** 20 / 4 // per))
    out = torch.empty(cand.shape[0], q.layout.groups, dtype=torch.float64, device=cand.device)
    for sel, fq in q.fake_chunks(x, cand, step):
        d = fq.sub_(x).square_()                                                   # [c, *x.shape]
        if q.layout.axis is None:
            out[sel] = d.reshape(d.shape[0], 1, -1).mean(dim=-1).neg().double()
        else:
            g = d.movedim(q.layout.axis, 1).reshape(d.shape[0], q.layout.groups, -1)
            out[sel] = g.mean(dim=-1).neg().double()
    return out


def keep_best(cand: torch.Tensor, scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The `keep` best candidates per scale group -> [keep, G, K] (first index wins ties for keep = 1)."""
    keep = min(keep, cand.shape[0])
    if keep == 1:
        idx = scores.argmax(dim=0, keepdim=True)
    else:
        idx = scores.topk(keep, dim=0).indices                                       # [keep, G_out]
    if scores.shape[1] == cand.shape[1]:
        return cand.gather(0, idx[..., None].expand(-1, -1, cand.shape[-1]))
    return cand[idx[:, 0]]                                                            # one output group: jointly


def beam_search(plan: Plan, score: Callable[[torch.Tensor], torch.Tensor],
                rescore_centres: bool = False) -> tuple[torch.Tensor, int, float]:
    """Run the plan; returns (best parameters [G, K], candidates scored, best summed score)."""
    survivors, scored, best = None, 0, float("nan")
    for make, keep in plan:
        cand = make(survivors)
        if rescore_centres and survivors is not None:
            cand = torch.cat([survivors, cand])
        s = score(cand)
        scored += cand.shape[0]
        survivors = keep_best(cand, s, keep)
        best = s.max(dim=0).values.sum().item()
    return survivors[0], scored, best
