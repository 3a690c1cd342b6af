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
