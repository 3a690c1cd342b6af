"""AdaLog's calibration (SPEC-adalog.md sections 2.5, 2.6, 3.5) as recipe stages:
`quantizer.recipe: [beam_search, fold_shift]` (conf/quantizer/adalog.yaml).

`beam_search`: layer by layer in module order, every layer seeing float inputs (parallel; `calib.mode=sequential`
gives it the quantized layers' outputs instead), each operand's quantizer searched by its beam plan
(ptq/quant/fpcs.py) with the `metric` group on the layer output, per the pipelines of section 3.5:
- a linear fed by a LayerNorm whose input quantizer is per channel (qkv, fc1, Swin reduction): the per-channel
  input is fitted to its own values, then folded into the LayerNorm affine and the linear (section 2.6: mean
  scale, rounded mean zero point), and the input becomes per tensor; the cached inputs are transformed alike;
- a linear: every operand whose quantizer is `self_scored` is first fitted to its own values (weight / input
  MSE); any other starts where its quantizer says (`start`: AdaLog post-GELU from its percentiles, q = r); then
  `search.rounds` rounds over the operands on the layer output, those not self-fitted first (fc2: the post-GELU
  input, then the weight; other linears: weight, then input);
- a matmul: both operands `start` (uniform: grid index C - 2; post-softmax AdaLog: s = 1, q = r), then the rounds;
- the patch-embedding conv: its weight searched once on the output (a single quantized operand needs no rounds).
Nothing here tests a quantizer's name: operands are found by the op's structure, behaviour by the quantizer's
declared capabilities (`beam_searched`, `self_scored`, `start`, `beam_plan`, `to_per_tensor`, `fold`). A quantizer
of another method mixes in: it initializes itself on its operand (`initialize`) and, if `searched`, is searched in
one flat stage over its own candidates (`quantizer.search`) -- e.g. PTQ4ViT's twin softmax in AdaLog's recipe;
one that is not searched (RepQ-ViT's percentile quantizers) keeps its initialization.

`fold_shift` (after reconstruction, when there is one): every input quantizer that shifts its operand (AdaLog
post-GELU) stops subtracting the shift, which moves into the linear's bias: b <- b - beta sum_j W_hat[:, j] with
the quantized weight (section 2.5); the output is unchanged.

Compat (`quantizer.compat`, i.e. each quantizer's form): official = the reference (beam centres not re-scored;
the reparameterization skipped when bits.a != bits.w, quirk 11; every candidate scored on the direct output, never
through `calib.fast_paths`); paper re-scores beam centres, always reparameterizes a per-channel post-LayerNorm
input and takes the fast paths.
"""
from __future__ import annotations

import logging
import time

import torch

from ptq.errors import PTQError
from ptq.metrics import get_metric
from ptq.quant.fast_paths import mse_shortcut
from ptq.quant.fpcs import beam_search as run_beam
from ptq.quant.fpcs import self_scores
from ptq.quant.modules import QLinear, QMatMul, QuantOp
from ptq.quant.search import OpResult, StepResult, evaluate_candidates
from ptq.quant.stage import RecipeState, register_stage
from ptq.quant.stages.base import SEARCH_READS, captured_layers
from ptq.quant.stages.repq import fold_channel_scales, layernorm_linear_pairs
from ptq.quantizers import Quantizer

log = logging.getLogger("ptq.calib")


def beam(q: Quantizer) -> bool:
    """Whether q offers a beam plan (FPCS); any other searched quantizer gets one flat stage of its candidates."""
    return getattr(q, "beam_searched", False)


class LayerSearch:
    """The section 3.5 pipeline of one layer on its captured data."""

    def __init__(self, name: str, op: QuantOp, cap: dict[str, torch.Tensor], metric, chunk_mb: float,
                 fast: bool = False, search=None):
        self.name, self.op, self.cap, self.metric, self.chunk_mb = name, op, cap, metric, chunk_mb
        self.search = search   # the flat candidate grid (quantizer.search) of quantizers without a beam plan
        # exact algebraic shortcuts of the mse metric (ptq/quant/fast_paths.py), paper form only: the official form
        # scores on the direct float32 output like the reference, whose near-ties (last beam stages, scores a few
        # ulps apart) the Gram-matrix sums order differently (issue 22 item 5: 24 of 96 attn.proj weight rows)
        self.fast = fast
        self.result = OpResult(name)
        self.round = -1

    def values(self, operand: str) -> torch.Tensor:
        return self.op.weight if operand == "weight" else self.cap[operand]

    def fit(self, operand: str, score: str) -> None:
        """Beam-search `operand`'s quantizer, scored on its own values ("self") or on the layer output."""
        q, x = self.op.quantizer(operand), self.values(operand)
        if score == "self":
            def fn(cand):
                return self_scores(q, x, cand, self.chunk_mb)
        elif self.fast and q.form != "official" and (fast := mse_shortcut(self.op, operand, q)) is not None:
            def fn(cand):
                return fast(self.op, cand, self.cap, self.chunk_mb)
        else:
            def fn(cand):
                return evaluate_candidates(self.op, operand, cand, self.cap, self.metric, self.chunk_mb,
                                           q.partner == "quantized")
        plan = q.beam_plan(x) if beam(q) else [(lambda _surv: q.candidates(self.search), 1)]
        best, scored, top = run_beam(plan, fn, rescore_centres=q.form == "paper")
        q.set_param(best)
        self.result.steps.append(StepResult(f"{operand}:{score}", self.round, [], top, scored, q.kind,
                                            q.param.flatten().tolist()))

    def reparameterize(self, norm, official_skip: bool) -> None:
        """Section 2.6 on a LayerNorm-fed linear with a per-channel input quantizer."""
        q = self.op.input_quantizer
        if official_skip:   # quirk 11: the reference falls back to a plain per-tensor input
            q.to_per_tensor(torch.ones(1), torch.full((1,), float(2 ** (q.bits - 1))))
            return
        self.fit("input", "self")
        scale, zero = q.param[:, 0].clone(), q.param[:, 1].clone()
        d_star, z_star = fold_channel_scales(norm, self.op, scale, zero, round_zero=True)
        r = scale / d_star
        if q.form == "official":   # the offset as the reference (and the LayerNorm bias fold) evaluates it
            o = (-zero * scale) / r - (-z_star * d_star)
        else:
            o = (z_star - zero) * d_star
        self.cap["input"] = self.cap["input"] / r - o
        q.to_per_tensor(d_star, z_star)

    def start(self, operand: str, q: Quantizer) -> None:
        if beam(q):
            q.start(self.values(operand))
        else:   # a quantizer of another method: its own initialization (e.g. min-max, a percentile fit)
            q.initialize(self.values(operand))

    def run(self, rounds: int) -> OpResult:
        t0 = time.time()
        quantizers = self.op.quantizers()
        self_fit: list[str] = []
        if isinstance(self.op, QLinear):
            for operand, q in quantizers.items():
                if beam(q) and q.self_scored:
                    self.fit(operand, "self")
                    self_fit.append(operand)
                else:
                    self.start(operand, q)
        elif isinstance(self.op, QMatMul):
            for operand, q in quantizers.items():
                self.start(operand, q)
        else:   # the conv: inputs other than the weight start; the weight is searched on the output directly
            for operand, q in quantizers.items():
                if operand != "weight" or not q.searched:
                    self.start(operand, q)
        searched = [o for o, q in quantizers.items() if q.searched]
        order = [o for o in searched if o not in self_fit] + [o for o in self_fit if o in searched]
        for r in range(rounds if len(order) > 1 else 1):
            self.round = r
            for operand in order:
                self.fit(operand, "output")
        self.result.seconds = time.time() - t0
        return self.result


@register_stage("beam_search", reads=SEARCH_READS)
def beam_search(state: RecipeState) -> None:
    """Capture each layer's float operands and output once, then run its pipeline (module docstring)."""
    search_layers(state, LayerSearch)


def search_layers(state: RecipeState, layer_cls: type[LayerSearch]) -> None:
    """The beam_search loop with a pipeline class of choice (APHQ-ViT's stage subclasses LayerSearch)."""
    pcfg = state.pcfg
    metric = get_metric(pcfg.metric)
    norms = {id(linear): (name, norm) for name, norm, linear in layernorm_linear_pairs(state.model)}
    reparam = 0
    for n, op, cap in captured_layers(state):
        layer = layer_cls(n, op, cap, metric, pcfg.chunk_mb or 8.0,
                          fast=pcfg.fast_paths and pcfg.metric == "mse", search=pcfg.search)
        q_in = getattr(op, "input_quantizer", None)
        if id(op) in norms and q_in is not None and q_in.layout.axis is not None:
            if not hasattr(q_in, "to_per_tensor"):
                raise PTQError(f"{n}: a per-channel post-LayerNorm input needs a quantizer that can become per "
                               f"tensor; {q_in.kind} cannot; valid: uniform_grid")
            skip = q_in.form == "official" and pcfg.a_bits != pcfg.w_bits
            layer.reparameterize(norms[id(op)][1], skip)
            reparam += not skip
        state.report.layers.append(layer.run(pcfg.search.rounds))
    log.info("reparameterized %d LayerNorm -> linear pairs", reparam)


def _shifting(q: Quantizer | None) -> bool:
    return q is not None and q.initialized and hasattr(q, "fold")


@register_stage("fold_shift", transforms_model=True, after_reconstruct=True)
@torch.no_grad()
def fold_shift(state: RecipeState) -> None:
    """Move every shifting input quantizer's shift into its linear's bias (section 2.5)."""
    folded = 0
    for op in state.ops.values():
        if not isinstance(op, QLinear) or not _shifting(op.input_quantizer):
            continue
        beta = op.input_quantizer.fold()
        if not beta:
            continue
        wq = op.weight_quantizer
        w = wq.fake(op.weight, wq.param) if wq is not None and wq.initialized else op.weight
        shift = -beta * w.sum(dim=1)
        if op.bias is None:
            op.bias = torch.nn.Parameter(shift.clone(), requires_grad=False)
        else:
            op.bias.add_(shift)
        folded += 1
    log.info("folded the post-GELU shift into %d biases", folded)
