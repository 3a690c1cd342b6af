"""The `mlp_reconstruct` recipe stage (APHQ-ViT's MLP reconstruction, CVPR'25; ptq/recon/MLP_SPEC.md): before any
calibration, in every transformer block's MLP GELU becomes ReLU, and fc1 / fc2 are distilled to the float GELU MLP
on the reconstruction images, so the post-activation values the method then quantizes are non-negative, clamped
in range, and uniform-quantizer friendly. A plug-in placed first in every method's recipe (`mlp_recon.name` not
none); its change travels with the saved parameters (ptq/recon/mlp_state.py).

Per MLP in module order, on the float model as built (quantizers off, no MLP changed yet: each MLP learns from the
float model's inputs to it, as the reference code's untouched copy of the model gives them): one capture pass over
the images gives the MLP's inputs X, its GELU output O and what the loss `mlp_recon.loss` weights the error with
(ptq/recon/losses/; aph: the KL Hessian diagonal at the MLP output); ub = the `clamp_pct` quantile of the positive
entries of GELU(fc1 X), the float fc2 input. Then `iters` Adam steps (lr cosine-annealed to 0, a fresh random
batch each) on the weights and biases of fc1 and fc2 of the ReLU MLP f:
    loss = L(f(X_b), O_b) + clamp_weight * L(f_ub(X_b), O_b),   f_ub: fc2's input clamped to [0, ub],
L the loss's criterion (rec_scale * sum over tokens, mean over the rest, of the weighted squared error). After the
last MLP every GELU is replaced at once (mlp_state.install).
"""
from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ptq.errors import PTQError
from ptq.quant.stage import PlugIn, RecipeState, register_stage
from ptq.quant.wrap import set_quant_enabled
from ptq.recon.adaround import cosine_lr
from ptq.recon.losses import get_recon_loss
from ptq.recon.losses.base import CaptureContext, Criterion
from ptq.recon.losses.base import reads as loss_reads
from ptq.recon.mlp_config import STAGE, check_recipe, clamp_pct, resolve_mlp_recon
from ptq.recon.mlp_state import TENSORS, gelu_mlps, install, keep_float, keep_original, reconstructed_mlps
from ptq.schema import MLPReconConfig

log = logging.getLogger("ptq.recon.mlp")

Weights = dict[str, torch.Tensor]   # keys TENSORS: fc1.weight, fc1.bias, fc2.weight, fc2.bias


def relu_mlp(x: torch.Tensor, w: Weights, ub: float | None = None) -> torch.Tensor:
    """fc2(relu(fc1 x)), fc2's input clamped to at most ub when given."""
    a = F.relu(F.linear(x, w["fc1.weight"], w["fc1.bias"]))
    if ub is not None:
        a = a.clamp(max=ub)
    return F.linear(a, w["fc2.weight"], w["fc2.bias"])


def objective(w: Weights, x: torch.Tensor, target: torch.Tensor, idx: torch.Tensor, criterion: Criterion,
              ub: float, clamp_weight: float) -> torch.Tensor:
    """L(f(x)) + clamp_weight * L(f_ub(x)) against the float output (module docstring)."""
    loss = criterion(relu_mlp(x, w), target, idx)
    if clamp_weight > 0:
        loss = loss + clamp_weight * criterion(relu_mlp(x, w, ub), target, idx)
    return loss


@torch.no_grad()
def measure(w: Weights, x: torch.Tensor, target: torch.Tensor, criterion: Criterion, ub: float,
            clamp_weight: float, batch_size: int) -> tuple[float, float]:
    """(the objective averaged over batches, the plain output MSE) of the ReLU MLP `w` on (x, target)."""
    loss, sq = 0.0, 0.0
    for i in range(0, len(x), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(x)), device=x.device)
        loss += objective(w, x[idx], target[idx], idx, criterion, ub, clamp_weight).item() * len(idx)
        sq += (relu_mlp(x[idx], w) - target[idx]).square().sum().item()
    return loss / len(x), sq / target.numel()


def positive_quantile(values: torch.Tensor, q: float) -> float:
    """The q quantile of the positive entries (the ceil(q n)-th smallest of the n positive values, as the
    reference's percentile); 0 when there are none."""
    pos = values[values > 0]
    if pos.numel() == 0:
        return 0.0
    k = min(max(math.ceil(q * pos.numel()), 1), pos.numel())
    return float(pos.float().kthvalue(k).values)


@torch.no_grad()
def clamp_bound(mlp: nn.Module, x: torch.Tensor, q: float, batch_size: int) -> float:
    """ub: the q quantile of the positive values of the float fc2 input, act(fc1 x), over all of x."""
    parts = [mlp.act(mlp.fc1(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return positive_quantile(torch.cat([p.reshape(-1) for p in parts]), q)


def distill(w0: Weights, x: torch.Tensor, target: torch.Tensor, criterion: Criterion, ub: float,
            mc: MLPReconConfig, generator: torch.Generator, progress: bool = False, desc: str = "") -> Weights:
    """`mc.iters` Adam steps on a copy of w0 (batches of mc.batch_size rows of x drawn with `generator`)."""
    w = {k: v.detach().clone().requires_grad_(True) for k, v in w0.items()}
    if mc.iters == 0:
        return {k: v.detach() for k, v in w.items()}
    opt = torch.optim.Adam(list(w.values()), lr=mc.lr)
    for t in tqdm(range(1, mc.iters + 1), desc=desc, unit="it", leave=False, disable=not progress):
        idx = torch.randperm(len(x), generator=generator)[:mc.batch_size].to(x.device)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(t, mc.iters, mc.lr)
        with torch.enable_grad():
            loss = objective(w, x[idx], target[idx], idx, criterion, ub, mc.clamp_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
    return {k: v.detach() for k, v in w.items()}


def _reads(config: dict) -> list[str]:
    """Beyond its group: the images' draw (recon.n_images of them after the calibration ones) and the capture's
    batch; metric.fisher_draws where its loss reads it."""
    loss = (config.get("mlp_recon") or {}).get("loss", "aph")
    return ["recon.n_images", "calib.batch_size", "recon.target"] + (
        ["metric.fisher_draws"] if loss_reads(loss, "fisher_draws") else [])


def _calibrated(state: RecipeState) -> list[str]:
    return [n for n, op in state.ops.items() if any(q.initialized for q in op.quantizers().values())]


@register_stage(STAGE, reads=(_reads,), plugin=PlugIn("mlp_recon", resolve_mlp_recon, first=True,
                                                       check_recipe=check_recipe))
def mlp_reconstruct(state: RecipeState) -> None:
    """The stage (module docstring); its rows go to the report's `mlp_reconstruction`."""
    mc, model, pcfg = state.pcfg.mlp_recon, state.model, state.pcfg
    if state.recon_data is None:
        raise PTQError(f"mlp_recon.name={mc.name} needs reconstruction images; valid: pass recon_data to "
                       f"quantize_model (run.py draws recon.n_images train images)")
    done = _calibrated(state)
    if done:
        raise PTQError(f"{STAGE} must run before calibration, but {done[0]} is already calibrated; valid: "
                       f"{STAGE} as the recipe's first stage (it changes the float model)")
    if reconstructed_mlps(model):
        raise PTQError(f"{STAGE} already ran on this model; valid: build a fresh model")
    mlps = gelu_mlps(model)
    if not mlps:
        raise PTQError(f"mlp_recon.name={mc.name} found no MLP with GELU in {type(model).__name__}; valid: a timm "
                       f"ViT / DeiT / Swin (timm.layers.Mlp with nn.GELU)")
    odd = [n for n, m in mlps if not isinstance(m.norm, nn.Identity)]
    if odd:
        raise PTQError(f"{STAGE} distills fc2(act(fc1 x)), but MLP {odd[0]} has a norm between them; valid: MLPs "
                       f"without one (ViT, DeiT, Swin)")
    t0 = time.time()
    x = state.recon_data[0].to(state.device)
    set_quant_enabled(model, False)
    loss = get_recon_loss(mc.loss)
    draws = pcfg.fisher_draws if loss_reads(mc.loss, "fisher_draws") else 0
    generator = torch.Generator().manual_seed(pcfg.seed)
    capture_bs = max(mc.batch_size, pcfg.batch_size)
    pct = clamp_pct(mc, pcfg.a_bits)
    rows, new = [], {}
    for name, mlp in mlps:   # the model stays float (GELU) until every MLP is distilled
        t1 = time.time()
        (fp_in, *_), target, stats = loss.capture(CaptureContext(model, mlp, x, capture_bs, generator, mc, draws))
        criterion = loss.criterion(stats, mc)
        ub = clamp_bound(mlp, fp_in, pct, capture_bs)
        w0 = {k: getattr(getattr(mlp, k.split(".")[0]), k.split(".")[1]).detach() for k in TENSORS}
        ev_x, ev_t = fp_in[:mc.eval_images], target[:mc.eval_images]
        before = measure(w0, ev_x, ev_t, criterion, ub, mc.clamp_weight, capture_bs)
        new[name] = distill(w0, fp_in, target, criterion, ub, mc, generator, state.progress, f"mlp recon {name}")
        after = measure(new[name], ev_x, ev_t, criterion, ub, mc.clamp_weight, capture_bs)
        rows.append({"mlp": name, "iters": mc.iters, "ub": ub, "loss_before": before[0], "loss_after": after[0],
                     "mse_before": before[1], "mse_after": after[1], "seconds": round(time.time() - t1, 3)})
        log.info("mlp recon %s: ub %.3g, loss %.4g -> %.4g, output MSE %.4g -> %.4g (%.1fs)", name, ub, before[0],
                 after[0], before[1], after[1], rows[-1]["seconds"])
        del fp_in, target, stats
    if pcfg.recon.name != "none" and pcfg.recon.target == "original":
        keep_original(model)
    for name, mlp in mlps:
        install(mlp, new[name])
    keep_float(model)
    state.report.mlp_reconstruction = {
        "name": mc.name, "loss": mc.loss, "iters": mc.iters, "lr": mc.lr, "images": len(x), "clamp_pct": pct,
        "clamp_weight": mc.clamp_weight, "mlps": rows, "seconds": round(time.time() - t0, 3)}
