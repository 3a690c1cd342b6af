"""The `reconstruct` recipe stage: unit by unit in execution order, learn rounding and step sizes, then harden.

Per unit: one pass over the reconstruction images with every quantizer off captures the float unit's inputs and
output, and what the loss `recon.loss` needs at the output (ptq/recon/losses/; fisher: the squared task-loss
gradient, labels drawn from the float model's softmax, normalized to mean 1); with inputs=quantized a second pass
with every quantizer on captures the inputs the quantized model gives the unit (the units before it already
reconstructed: BRECQ). Then `iters` Adam steps on a fresh random batch each: loss = the loss's criterion (mse:
rec_scale * sum over dim 1, mean over the others, of the squared error to the float output; the head: KL of the
softmaxes with head_loss=kl) + reg_lambda * sum(1 - |2h - 1|^b) after
warm-up. QDrop (drop_prob > 0): each element of the unit's input is the float one with probability drop_prob, and
inside the unit each activation stays float with that probability. At the end the rounding is hardened into the
weight quantizers (`rounding`) and the learned steps become their `param`.
"""
from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ptq.errors import PTQError
from ptq.quant.stage import PlugIn, RecipeState, register_stage
from ptq.quant.wrap import set_quant_enabled
from ptq.recon.adaround import annealed_b, cosine_lr
from ptq.recon.capture import capture_unit
from ptq.recon.config import resolve_recon
from ptq.recon.learnable import install
from ptq.recon.losses import get_recon_loss
from ptq.recon.losses.base import LOSS_KEYS, CaptureContext, Criterion, squared_error
from ptq.recon.losses.base import reads as loss_reads
from ptq.recon.mlp_state import original_float
from ptq.recon.step import FusedAdam, compiled_step_loss, step_loss
from ptq.recon.units import find_units
from ptq.schema import ReconConfig

log = logging.getLogger("ptq.recon")


def output_loss(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, kl: bool,
                scale: float) -> torch.Tensor:
    """rec_scale * mean over all dims but 1 of the sum over dim 1 of the (weighted) squared error; or the batch
    mean of KL(softmax(target) || softmax(out)) (kl)."""
    if kl:
        logp = F.log_softmax(target, -1)
        return scale * (logp.exp() * (logp - F.log_softmax(out, -1))).sum(-1).mean()
    return squared_error(out, target, weight, scale)


def first_step_normalized(criterion: Criterion) -> Criterion:
    """recon.rec_norm=first: the criterion divided by its value at the first step (a number, no gradient), times 2
    (the APHQ-ViT code's block reconstruction, head included): the loss starts at 2 in every unit, so the rounding
    regularizer's weight is relative to it rather than to the unit's output scale."""
    first: list[float] = []

    def normalized(out: torch.Tensor, target: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        rec = criterion(out, target, idx)
        if not first:
            first.append(rec.detach().item())
        return rec * (2.0 / first[0]) if first[0] > 0 else rec
    return normalized


@torch.no_grad()
def unit_mse(unit: nn.Module, inputs: list[torch.Tensor], target: torch.Tensor, batch_size: int) -> float:
    """Mean squared error of the unit's output to the float output (what reconstruction reduces)."""
    total = 0.0
    for i in range(0, len(target), batch_size):
        out = unit(*(t[i:i + batch_size] for t in inputs))
        total += (out - target[i:i + batch_size]).square().sum().item()
    return total / target.numel()


def _train_inputs(rc: ReconConfig, fp_in: list[torch.Tensor], q_in: list[torch.Tensor] | None,
                  idx: torch.Tensor) -> list[torch.Tensor]:
    if q_in is None:
        return [t[idx] for t in fp_in]
    if rc.drop_prob <= 0:
        return [t[idx] for t in q_in]
    return [torch.where(torch.rand_like(q[idx]) < rc.drop_prob, f[idx], q[idx]) for f, q in zip(fp_in, q_in)]


def reconstruct_unit(name: str, unit: nn.Module, rc: ReconConfig, fp_in: list[torch.Tensor],
                     q_in: list[torch.Tensor] | None, target: torch.Tensor, criterion: Criterion,
                     generator: torch.Generator, progress: bool) -> dict:
    """Optimize one unit (its quantizers enabled) and harden it; returns its report row."""
    t0 = time.time()
    eval_in = [t[:rc.eval_images] for t in (q_in if q_in is not None else fp_in)]
    eval_target = target[:rc.eval_images]
    mse_before = unit_mse(unit, eval_in, eval_target, rc.batch_size)
    inst = install(unit, rc.learn_rounding, rc.learn_step, rc.drop_prob)
    rounding, steps = inst.rounding(), inst.steps()
    groups = ([{"params": [m.alpha for m in rounding], "lr": rc.lr_rounding}] if rounding else []) + \
             ([{"params": steps, "lr": rc.lr_step, "step_sizes": True}] if steps else [])
    fast = rc.compile or rc.precision != "float32"     # the opt-in step forms (ptq/recon/step.py)
    # the fused Adam with the compiled step (one kernel per group; its sums differ from the default's)
    opt = None if not groups or rc.iters <= 0 else FusedAdam(groups) if rc.compile else torch.optim.Adam(groups)
    step_fn = compiled_step_loss() if rc.compile else step_loss
    n = len(target)
    losses: list[float] = []
    bar = tqdm(range(1, rc.iters + 1) if opt else [], desc=f"reconstruct {name}", unit="it", leave=False,
               disable=not progress)
    inst.train(True)
    try:
        for t in bar:
            idx = torch.randperm(n, generator=generator)[:rc.batch_size].to(target.device)
            b = annealed_b(t, rc.iters, rc.warmup, rc.b_start, rc.b_end)
            with torch.enable_grad():
                if fast:     # b a tensor: the compiled graph does not specialize on it
                    loss, rec = step_fn(unit, rounding, criterion, rc.reg_lambda, _train_inputs(rc, fp_in, q_in, idx),
                                        target[idx], idx, None if b is None else torch.tensor(b), rc.precision)
                else:
                    inst.set_exponent(b)    # the rounding regularizer is computed in the forward (same sigmoid)
                    out = unit(*_train_inputs(rc, fp_in, q_in, idx))
                    rec = criterion(out, target[idx], idx)
                    loss = rec
                    if b is not None and rounding:
                        loss = rec + rc.reg_lambda * sum(m.regularizer(b) for m in rounding)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            for g in opt.param_groups:
                if g.get("step_sizes"):
                    g["lr"] = cosine_lr(t, rc.iters, rc.lr_step)
            opt.step()
            losses.append(rec.item())
            if t % 20 == 0 or t == rc.iters:
                bar.set_postfix(rec=f"{rec.item():.4g}", loss=f"{loss.item():.4g}")
    finally:
        bar.close()
        inst.train(False)
        inst.finish()
    mse_after = unit_mse(unit, eval_in, eval_target, rc.batch_size)
    row = {"unit": name, "iters": rc.iters if opt else 0, "seconds": round(time.time() - t0, 3),
           "rounding_tensors": len(rounding), "step_sizes": len(steps),
           "mse_before": mse_before, "mse_after": mse_after,
           "rec_first": losses[0] if losses else None, "rec_last": losses[-1] if losses else None}
    log.info("reconstruct %s: %d its, output MSE %.4g -> %.4g (%.1fs)", name, row["iters"], mse_before, mse_after,
             row["seconds"])
    return row


def _fisher_draws(config: dict) -> list[str]:
    """metric.fisher_draws where the reconstruction loss reads it (its declaration, ptq/recon/losses/)."""
    return ["metric.fisher_draws"] if loss_reads((config.get("recon") or {}).get("loss", "mse"), "fisher_draws") else []


def _recon_keys(config: dict) -> list[str]:
    """The recon group's keys but the recon.loss_* options its loss does not read (ptq/recon/losses/)."""
    recon = config.get("recon") or {}
    loss = recon.get("loss", "mse")
    return [f"recon.{k}" for k in recon if k not in LOSS_KEYS or loss_reads(loss, k)] or ["recon"]


# A plug-in stage: joins every method's recipe when recon.name is not none (and reads the recon group then).
@register_stage("reconstruct", reads=("calib.seed", "calib.batch_size", _fisher_draws, _recon_keys),
                plugin=PlugIn("recon", resolve_recon, reads_group=False))
def reconstruct(state: RecipeState) -> None:
    """The stage: every unit of the model in execution order (see the module docstring)."""
    rc, model = state.pcfg.recon, state.model
    if state.recon_data is None:
        raise PTQError(f"recon.name={rc.name} needs reconstruction images; valid: pass recon_x/recon_y to "
                       f"quantize_model (run.py draws recon.n_images train images)")
    done = getattr(model, "_ptq_after_reconstruct", None)
    if done:   # e.g. AdaLog's shift fold: with quantizers off the model is no longer the float target
        raise PTQError(f"recon.name={rc.name} cannot run on a model whose stage {done} already ran (it must follow "
                       f"reconstruction); valid: reconstruct a model calibrated without it, then run {done}")
    t0 = time.time()
    x = state.recon_data[0].to(state.device)
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    set_quant_enabled(model, False)
    units = find_units(model, rc.unit, x[:1])
    generator = torch.Generator().manual_seed(state.pcfg.seed)
    capture_bs = max(rc.batch_size, state.pcfg.batch_size)
    rows = []
    for name, unit in units:
        set_quant_enabled(model, False)
        kl = rc.head_loss == "kl" and unit is head
        loss = get_recon_loss(rc.loss)
        draws = state.pcfg.fisher_draws if loss_reads(rc.loss, "fisher_draws") else 0   # read only where declared
        src, src_unit = model, unit
        if rc.target == "original" and (orig := original_float(model)) is not None:   # the model before MLP recon
            src, src_unit = orig, orig.get_submodule(name)
            set_quant_enabled(src, False)
        fp_in, target, stats = loss.capture(CaptureContext(src, src_unit, x, capture_bs, generator, rc, draws))
        q_in = None
        if rc.inputs == "quantized":
            set_quant_enabled(model, True)
            q_in, _, _ = capture_unit(model, unit, x, capture_bs)
        set_quant_enabled(model, True)
        criterion = (lambda o, t, i: output_loss(o, t, None, True, rc.rec_scale)) if kl else \
            loss.criterion(stats, rc)
        if rc.rec_norm == "first":
            criterion = first_step_normalized(criterion)
        rows.append(reconstruct_unit(name, unit, rc, fp_in, q_in, target, criterion, generator, state.progress))
        del fp_in, q_in, target, stats
    set_quant_enabled(model, True)
    state.report.reconstruction = {
        "name": rc.name, "unit": rc.unit, "iters": rc.iters, "images": len(x), "units": rows,
        "seconds": round(time.time() - t0, 3)}
