"""Exact algebraic shortcuts for the search, used where they give the same scores as the direct evaluation.

mse on a linear layer's weight: with E the (quantized) input rows [N, in], W the float weight, Delta_c = W_c - W
the weight error of candidate c and F = E W^T + b - O the error the quantized input alone causes, the output error
is E Delta_c^T + F, so its squared norm per output feature is
    Delta_c (E^T E) Delta_c^T + 2 Delta_c (E^T F) + ||F||^2:
every candidate costs in^2 x out operations instead of N x in x out, independent of the number of calibration
tokens, and every term is of the size of the error (no cancellation of large terms). Disable with
`calib.fast_paths=false`; a test checks it against the direct evaluation.
"""
from __future__ import annotations

import torch

from ptq.quant.modules import QLinear, _apply


def linear_weight_mse_scores(op: QLinear, params: torch.Tensor, cap: dict[str, torch.Tensor],
                             chunk_mb: float) -> torch.Tensor:
    """Scores [C, G] of weight candidates params [C, G] under the mse metric (mean over tokens and the group's
    features, summed over samples)."""
    x = cap["input"]
    t = x.shape[1]
    e = _apply(op.input_quantizer, x).reshape(-1, x.shape[-1])                  # [N, in]
    w = op.weight
    f = e @ w.t() - cap["out"].reshape(-1, w.shape[0])                          # [N, out]
    if op.bias is not None:
        f = f + op.bias
    gram = e.t() @ e                                                            # [in, in]
    cross = (e.t() @ f).t()                                                     # [out, in]
    f2 = f.double().square().sum(0)                                             # [out]
    g = op.weight_quantizer.layout.groups
    out_f = op.out_features
    scores = torch.empty(params.shape[0], g, dtype=torch.float64, device=params.device)
    step = max(1, int(chunk_mb * 2**20 // (out_f * op.in_features * 4 * 3)))
    for c0 in range(0, params.shape[0], step):
        d = op.weight_quantizer.fake(w, params[c0:c0 + step]) - w               # [c, out, in]
        sse = ((d @ gram) * d).sum(-1).double() + 2 * (d * cross).sum(-1).double() + f2
        scores[c0:c0 + step] = -sse.clamp_(min=0).reshape(-1, g, out_f // g).sum(-1) / (t * (out_f // g))
    return scores


def linear_input_mse_scores(op: QLinear, params: torch.Tensor, cap: dict[str, torch.Tensor],
                            chunk_mb: float) -> torch.Tensor:
    """Scores [C, 1] of per-tensor input candidates params [C, ...] under the mse metric. With D_c = X_c - X the
    input error of candidate c (X_c its quantized input), W the (quantized) weight and F = X W^T + b - O, the
    output error is D_c W^T + F; its squared norm is computed directly ((X_c W^T + b - O)^2, N x in x out per
    candidate) or, when the layer widens (in < out), as sum_n d_n (W^T W) d_n^T + 2 d_n (F W)_n + ||F||^2
    (N x in^2): the same score with fewer operations, and no output-sized temporaries."""
    x = cap["input"]
    t, n_in = x.shape[1], x.shape[-1]
    xf = x.reshape(-1, n_in)                                                      # [N, in]
    w = _apply(op.weight_quantizer, op.weight)                                   # [out, in]
    n_out = w.shape[0]
    base = -cap["out"].reshape(-1, n_out)
    if op.bias is not None:
        base = base + op.bias                                                    # b - O
    widen = n_in < n_out
    if widen:
        f = xf @ w.t() + base                                                    # [N, out]
        gram, fw, f2 = w.t() @ w, f @ w, f.double().square().sum()
    per = xf.numel() * (3 if widen else 2) + (0 if widen else base.numel())
    step = max(1, int(chunk_mb * 2**20 / 4 // per))   # candidates are scored one by one: memory bound only
    scores = torch.empty(params.shape[0], 1, dtype=torch.float64, device=params.device)
    for sel, xq in op.input_quantizer.fake_chunks(xf, params, step):            # [c, N, in]
        if widen:
            d = xq.sub_(xf)
            sse = (torch.matmul(d, gram).mul_(d).sum(dim=(1, 2)).double()
                   + 2 * d.mul_(fw).sum(dim=(1, 2)).double() + f2)
        else:
            out = torch.matmul(xq, w.t()).add_(base)
            sse = out.square_().sum(dim=(1, 2)).double()
        scores[sel, 0] = -sse.clamp_(min=0) / (t * n_out)
    return scores


def mse_shortcut(op, operand: str, q, inputs: bool = True):
    """The exact shortcut of the mse metric for scoring `operand`'s candidates, or None where none applies: a
    linear's weight, or (inputs=True) its per-tensor input, with the other operand at its quantization. Its
    scores equal the direct evaluation's up to float rounding; PTQ4ViT's grid search uses only the weight one
    (inputs=False), which keeps its published parameters bit for bit."""
    if not isinstance(op, QLinear) or q.partner != "quantized":
        return None
    if operand == "weight":
        return linear_weight_mse_scores
    return linear_input_mse_scores if inputs and q.layout.axis is None else None
