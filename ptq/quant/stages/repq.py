"""RepQ-ViT's calibration (SPEC-repq.md sections 4-5) as recipe stages: `quantizer.recipe: [init_quantized_pass,
reparam_layernorm]` (conf/quantizer/repq_vit.yaml).

1. `init_quantized_pass`: every quantizer is enabled before any is initialized, then one forward pass of the whole
   calibration batch (one batch, as the reference; `calib.batch_size` does not split it) runs with quantization
   on: each quantizer initializes on the first tensor it receives, so a layer sees the outputs of the already
   quantized layers before it.
2. `reparam_layernorm`: for every LayerNorm -> linear pair (norm1 -> attn.qkv, norm2 -> mlp.fc1, Swin's
   patch-merging norm -> reduction) whose linear input is quantized per channel with a zero point, fold the
   per-channel scales into the LayerNorm affine and the inverse into the linear (a function-preserving
   transform), make the input quantizer per tensor with (D*, z*) = (mean D_c, mean z_c), and re-initialize the
   linear's weight quantizer on the new weights. The reference does the re-initialization in a second
   calibration pass in which only those weight quantizers initialize again; a weight quantizer's initialization
   reads only the weight, so initializing it directly on the new weight gives the same parameters without the
   pass. Nothing else is re-estimated (the per-tensor (D*, z*) are kept as computed).

Both compat forms run the same stages; the forms differ only inside quantizers (log_sqrt2's zero level).
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ptq.errors import PTQError
from ptq.models.outliers import norm_linear_pairs
from ptq.quant.modules import QLinear
from ptq.quant.stage import RecipeState, register_stage
from ptq.quantizers import Quantizer

log = logging.getLogger("ptq.calib")
BITS_RANGE = (2, 8)   # SPEC-repq section 1: bits must be in 2..8


def _init_on_first(q: Quantizer, args: tuple) -> None:
    if not q.initialized:
        q.initialize(args[0])


@register_stage("init_quantized_pass", reads=())   # its slots and bits only (read by every job)
def init_quantized_pass(state: RecipeState) -> None:
    """One quantized forward pass of the whole calibration batch; each quantizer initializes on its first input."""
    lo, hi = BITS_RANGE
    for slot, spec in state.pcfg.slots.items():
        if spec.quantizer is not None and not lo <= spec.bits <= hi:
            raise PTQError(f"slot {slot} has {spec.bits} bits; valid for this recipe: {lo}..{hi}")
    quantizers = [q for op in state.ops.values() for q in op.quantizers().values()]
    hooks = [q.register_forward_pre_hook(_init_on_first) for q in quantizers]
    try:
        for q in quantizers:
            q.enabled = True
        x = state.calibrator.x
        for op in state.ops.values():
            op.images = len(x)
        with torch.no_grad():
            state.model(x)
    finally:
        for h in hooks:
            h.remove()
    state.calibrator.passes += 1
    missed = [n for n, op in state.ops.items() for q in op.quantizers().values() if not q.initialized]
    if missed:
        log.warning("quantizers never reached by the calibration pass stay float: %s", missed[:5])


LINEAR_OF = {"norm1": "attn.qkv", "norm2": "mlp.fc1", "merge": "reduction"}  # the linear each LayerNorm kind feeds


def layernorm_linear_pairs(model: nn.Module) -> list[tuple[str, nn.LayerNorm, QLinear]]:
    """(name, LayerNorm, the quantized linear it alone feeds) for norm1 -> attn.qkv, norm2 -> mlp.fc1 and Swin's
    patch-merging norm -> reduction, in module order (found by ptq.models.outliers.norm_linear_pairs); only affine
    LayerNorms, whose weight and bias can take the folded scales."""
    pairs = []
    for kind, norm_name, norm, linear in norm_linear_pairs(model, (QLinear,)):
        if norm.elementwise_affine:
            owner = norm_name.rpartition(".")[0]
            pairs.append((f"{norm_name}->{owner + '.' if owner else ''}{LINEAR_OF[kind]}", norm, linear))
    return pairs


@torch.no_grad()
def fold_channel_scales(norm: nn.LayerNorm, linear: QLinear, scale: torch.Tensor, zero_point: torch.Tensor,
                        round_zero: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """SPEC-repq section 4 steps 2-5: fold the per-channel (D_c, z_c) of the linear's input into the LayerNorm
    affine and the linear; returns the per-tensor (D*, z*). The float function is unchanged. The channel c's input
    becomes x_c / r_c - (z* - z_c) D*, r_c = D_c / D*. RepQ-ViT keeps z* = mean z_c; AdaLog (SPEC-adalog 2.6)
    rounds it (round_zero)."""
    d_star, z_star = scale.mean(), zero_point.mean()
    if round_zero:
        z_star = torch.round(z_star)
    m_c, m_star = -zero_point * scale, -z_star * d_star
    r = scale / d_star
    s = m_c / r - m_star
    if norm.bias is None:
        raise PTQError("reparam_layernorm needs a LayerNorm with a bias; valid: nn.LayerNorm(bias=True)")
    norm.weight.div_(r)
    norm.bias.div_(r).sub_(s)
    linear.weight.mul_(r[None, :])
    shift = linear.weight @ s
    if linear.bias is None:
        linear.bias = nn.Parameter(shift.clone(), requires_grad=False)
    else:
        linear.bias.add_(shift)
    return d_star, z_star


@register_stage("reparam_layernorm", transforms_model=True)
def reparam_layernorm(state: RecipeState) -> None:
    """Per-channel post-LayerNorm input quantizers -> per tensor, scales folded into LayerNorm and linear; the
    affected weight quantizers re-initialize on the new weights."""
    _reparam_layernorm(state, round_zero=False)


@register_stage("reparam_layernorm_int", transforms_model=True)
def reparam_layernorm_int(state: RecipeState) -> None:
    """reparam_layernorm with z* rounded to an integer (as AdaLog does): a zero point ONNX QuantizeLinear takes,
    so the folded input deploys (conf/quantizer/repq_vit_deploy.yaml)."""
    _reparam_layernorm(state, round_zero=True)


def _reparam_layernorm(state: RecipeState, round_zero: bool) -> None:
    done = 0
    for name, norm, linear in layernorm_linear_pairs(state.model):
        q = linear.input_quantizer
        if q is None or q.layout.axis is None:
            continue   # already per tensor (or float): nothing to fold
        if not hasattr(q, "to_per_tensor") or not q.initialized:
            raise PTQError(f"reparam_layernorm needs an initialized per-channel uniform_asym input quantizer at "
                           f"{name}; got {q.kind} (initialized={q.initialized}); valid: ln_input quantizer "
                           f"uniform_asym after init_quantized_pass")
        d_star, z_star = fold_channel_scales(norm, linear, q.param, q.zero_point, round_zero)
        q.to_per_tensor(d_star, z_star)
        if linear.weight_quantizer is not None:
            linear.weight_quantizer.initialize(linear.weight)
        done += 1
    log.info("reparameterized %d LayerNorm -> linear pairs", done)

