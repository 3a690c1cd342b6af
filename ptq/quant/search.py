"""Scale search for one quantized op (spec section 5): alternate over its operands for `rounds` rounds; for each,
score every candidate parameter with the metric on the captured calibration data and keep the per-group argmax.

Candidates are evaluated many at a time: candidate outputs are one batched GEMM / matmul of shape [C, S, ...],
split into chunks whose size is bounded by `chunk_mb`, never a Python loop over candidates x samples.
"""
from __future__ import annotations

import logging
import math

import torch

from ptq.quant.calib_report import OpResult, StepResult
from ptq.quant.fast_paths import mse_shortcut
from ptq.quant.method import PTQConfig
from ptq.quant.modules import QuantOp

log = logging.getLogger("ptq.calib")


def _chunks(op: QuantOp, operand: str, cap: dict[str, torch.Tensor], n_cand: int, chunk_mb: float) -> tuple[int, int]:
    """(samples per chunk, candidates per chunk) so that the candidate outputs and the candidate operand of one
    chunk take about chunk_mb."""
    s_total = cap["out"].shape[0]
    per = cap["out"][0].numel() * 3  # output, difference, metric temporaries
    if operand != "weight":
        per += cap[operand][0].numel() if operand in cap else 0
    budget = max(1.0, chunk_mb * 2**20 / 4)
    per_all = per * s_total
    if per_all <= budget:
        return s_total, max(1, min(n_cand, int(budget // per_all)))
    return max(1, int(budget // per)), 1


def evaluate_candidates(op: QuantOp, operand: str, params: torch.Tensor, cap: dict[str, torch.Tensor], metric,
                        chunk_mb: float, other_quantized: bool = True) -> torch.Tensor:
    """Scores [C, G_out] of the candidate params [C, G] summed over all captured samples."""
    s_total = cap["out"].shape[0]
    s_chunk, c_chunk = _chunks(op, operand, cap, params.shape[0], chunk_mb)
    g2_all = cap.get("g2")
    scores = None
    for s0 in range(0, s_total, s_chunk):
        s = slice(s0, min(s_total, s0 + s_chunk))
        out = op.group_view(op.float_output(cap, s), operand)
        g2 = op.group_view(g2_all[s], operand) if g2_all is not None else None
        partner = op.partner_value(operand, cap, s, other_quantized)   # once for every chunk of candidates
        for c0 in range(0, params.shape[0], c_chunk):
            cand = op.candidate_outputs(operand, params[c0:c0 + c_chunk], cap, s, other_quantized, partner)
            part = metric(op.group_view(cand, operand), out, g2)
            del cand
            if scores is None:
                scores = torch.zeros(params.shape[0], part.shape[1], dtype=torch.float64, device=part.device)
            scores[c0:c0 + c_chunk] += part.double()
    return scores


def pick(params: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Per-group argmax (first index on ties); a single output group moves all scale groups together."""
    best = scores.argmax(dim=0)
    if scores.shape[1] == params.shape[1]:
        return params[best, torch.arange(params.shape[1], device=params.device)], best.tolist()
    return params[best[0]], best.tolist()


def search_op(name: str, op: QuantOp, cap: dict[str, torch.Tensor], metric, pcfg: PTQConfig) -> OpResult:
    """Search every quantizer of `op` in place."""
    import time

    t0 = time.time()
    result = OpResult(name)
    quantizers = op.quantizers()
    chunk_mb = pcfg.chunk_mb or 8.0
    for r in range(pcfg.search.rounds):
        for operand in op.operands:
            q = quantizers.get(operand)
            if q is None or not q.searched:
                continue
            params = q.candidates(pcfg.search)
            fast = mse_shortcut(op, operand, q, inputs=False) if pcfg.fast_paths and pcfg.metric == "mse" else None
            if fast is not None:
                scores = fast(op, params, cap, chunk_mb)
            else:
                scores = evaluate_candidates(op, operand, params, cap, metric, chunk_mb, q.partner == "quantized")
            if bool((scores == scores[:1]).all()):
                log.warning("%s %s: every candidate scores the same (%s); the metric cannot choose, keeping the "
                            "first", name, operand, scores[0, 0].item())
            best, idx = pick(params, scores)
            q.set_param(best)
            top = scores.max(dim=0).values.sum().item()
            result.steps.append(StepResult(operand, r, idx, top if math.isfinite(top) else float("nan"),
                                           params.shape[0], q.kind, q.param.flatten().tolist()))
    result.seconds = time.time() - t0
    return result
