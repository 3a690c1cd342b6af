"""The closed-form fits of the compensators: least squares with an intercept (optional ridge) by the normal
equation, per-channel affine least squares, and the R^2 that gates a map.

R^2 is the reference's multi-output form: 1 - sum((Y - Y_hat)^2) / sum((Y - mean_over_rows(Y))^2), one number for
all output channels; when Y has no variance at all (nothing to explain, e.g. quantization changed nothing) R^2 is 0,
so a map is never kept for it.
"""
from __future__ import annotations

import torch

SOLVERS = ("solve64", "inverse32")


def r2_score(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    """Multi-output coefficient of determination over the rows of y (N, m)."""
    ss_tot = (y - y.mean(dim=0)).square().sum()
    if ss_tot.item() == 0.0:
        return 0.0
    return float(1.0 - (y - y_hat).square().sum() / ss_tot)


def linear_least_squares(x: torch.Tensor, y: torch.Tensor, ridge: float = 0.0,
                         solver: str = "solve64") -> tuple[torch.Tensor, torch.Tensor, float]:
    """W (d, m), b (m) minimizing sum ||x W + b - y||^2 + ridge * N * ||W||_F^2 over the N rows of x (N, d) and
    y (N, m), with its R^2 on these rows. solve64: the normal equation (X1^T X1 / N + ridge I') Theta = X1^T Y / N
    in float64, X1 = [x, 1], I' the identity without the intercept's entry. inverse32: the released QwT code's
    arithmetic, inverse(X1^T X1) @ X1^T @ Y in float32 (no ridge term)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver}")
    n, d = x.shape
    if solver == "inverse32":
        x1 = torch.cat([x.float(), torch.ones(n, 1, dtype=torch.float32, device=x.device)], dim=1)
        gram = x1.T @ x1
        if ridge:
            gram = gram + ridge * n * torch.diag(torch.cat([torch.ones(d), torch.zeros(1)]).to(x.device))
        theta = torch.inverse(gram) @ x1.T @ y.float()
        w, b = theta[:-1], theta[-1]
        return w, b, r2_score(y.float(), x.float() @ w + b)
    x64, y64 = x.double(), y.double()
    x1 = torch.cat([x64, torch.ones(n, 1, dtype=torch.float64, device=x.device)], dim=1)
    gram = x1.T @ x1 / n
    gram[:d, :d] += ridge * torch.eye(d, dtype=torch.float64, device=x.device)
    theta = torch.linalg.solve(gram, x1.T @ y64 / n)
    w, b = theta[:-1], theta[-1]
    return w.float(), b.float(), r2_score(y64, x64 @ w + b)


def channel_affine_least_squares(y_q: torch.Tensor, y_fp: torch.Tensor,
                                 ridge: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per channel c, g_c and b_c minimizing sum_rows (g_c y_q + b_c - y_fp)^2 + ridge * N * (g_c - 1)^2 (ridge
    pulls the gain toward 1, no change), over the N rows of y_q, y_fp (N, C), in float64; the R^2 is that of the
    correction it predicts, (g - 1) y_q + b, for what quantization changed, y_fp - y_q (the quantity QwT fits)."""
    q, f = y_q.double(), y_fp.double()
    mq, mf = q.mean(0), f.mean(0)
    cov = ((q - mq) * (f - mf)).mean(0)
    var = (q - mq).square().mean(0)
    g = (cov + ridge) / (var + ridge)
    g = torch.where(var + ridge > 0, g, torch.ones_like(g))   # a constant channel: the bias alone
    b = mf - g * mq
    return g.float(), b.float(), r2_score(f - q, (g - 1) * q + b)
