"""ERQ's per-layer arithmetic as pure tensor functions (ptq/compensate/erq.py runs them on a model; SPEC.md).

Notation: a layer computes y = x W^T + b, W (m, d); its input rows x (N, d) as the quantized layer sees them,
`xq` = Q_a(x), with a column of ones appended when the layer has a bias (the bias is then the last weight column).

1. `ridge_update` (Aqer): the float weights W' minimizing ||[xq, 1] W'^T - y||^2 + lambda ||W' - W||^2, y the float
   layer's output on its float input: W' = W + beta^T, beta = (A^T A + lambda I)^{-1} A^T (y - A W^T), A = [xq, 1].
   The penalty is on the raw Gram (not divided by N) and covers the bias, as the released code does.
2. `quantize_by_halves` (Wqer): the columns of [W', b'] are quantized in order, half of the still-unquantized ones
   at a time, until one is left (the bias, never quantized); each half's floor / ceil choices are refined by
   `refine_rounding` on the quadratic error delta^T H delta, H the second moment of that half's input columns, then
   the still-unquantized columns absorb the half's error by ridge regression,
   Delta_2 = -(I_2^T I_2 + lambda I)^{-1} I_2^T I_1 delta_1^T.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ptq.compensate.solver import SOLVERS

# (the float weight matrix (m, d)) -> (its floor value, its ceil value, nearest rounding rounds up), dequantized
RoundingChoices = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
MOMENTS = ("mean_cov", "raw")


def solve_ridge(gram: torch.Tensor, rhs: torch.Tensor, lam: float, solver: str) -> torch.Tensor:
    """(gram + lam I)^{-1} rhs: solve64 in float64 by a solve; inverse32 as the released code, an explicit float32
    inverse times rhs."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver}")
    n = gram.shape[0]
    if solver == "inverse32":
        eye = torch.eye(n, dtype=torch.float32, device=gram.device)
        return torch.inverse(gram.float() + lam * eye) @ rhs.float()
    eye = torch.eye(n, dtype=torch.float64, device=gram.device)
    return torch.linalg.solve(gram.double() + lam * eye, rhs.double())


def with_ones(x: torch.Tensor, bias: bool) -> torch.Tensor:
    """x (N, d) with a column of ones appended when the layer has a bias."""
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1) if bias else x


def ridge_update(xq: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, lam: float,
                 solver: str = "solve64") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Step 1 (module docstring): the updated (W', b') for inputs xq (N, d), float targets y (N, m), W (m, d),
    b (m) or None."""
    dt = _dtype(solver)
    a = with_ones(xq.to(dt), b is not None)
    wc = (torch.cat([w, b[:, None]], dim=1) if b is not None else w).to(dt)
    residual = y.to(dt) - a @ wc.T
    beta = solve_ridge(a.T @ a, a.T @ residual, lam, solver)
    wc = (wc + beta.T.to(dt)).to(w.dtype)
    return (wc[:, :-1], wc[:, -1]) if b is not None else (wc, None)


def _dtype(solver: str) -> torch.dtype:
    """The arithmetic of a solver's whole step: float64 for solve64, float32 (the released code's) for inverse32."""
    return torch.float64 if solver == "solve64" else torch.float32


def second_moment(x: torch.Tensor, form: str) -> torch.Tensor:
    """E[x x^T] of the rows of x (N, k): `raw` X^T X / N; `mean_cov` mu mu^T + the unbiased covariance (the released
    code's, torch.cov: the covariance divided by N - 1)."""
    if form == "raw":
        return x.T @ x / len(x)
    if form != "mean_cov":
        raise ValueError(f"unknown moment form {form}")
    mu = x.mean(dim=0)
    cov = torch.cov(x.T) if len(x) > 1 else torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
    return mu[:, None] * mu[None, :] + cov.reshape(x.shape[1], x.shape[1])


def quadratic_error(delta: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """delta_r^T H delta_r for every row r of delta (rows, k)."""
    return ((delta @ h) * delta).sum(dim=1)


def refine_rounding(d_floor: torch.Tensor, d_ceil: torch.Tensor, up: torch.Tensor, h: torch.Tensor,
                    iterations: int) -> tuple[torch.Tensor, int]:
    """Greedy floor / ceil refinement of each row's rounding errors on delta^T H delta (returns the decisions and
    the number of accepted flips). d_floor, d_ceil (rows, k): each weight's error if rounded down / up; up (rows,
    k, bool): the start (nearest rounding). Per iteration and row: the gradient g = 2 H delta; among the weights
    whose error has the gradient's sign (moving to the other side lowers the error to first order), the one of
    largest |g|; its error is set to whichever of floor / ceil is nearer to delta - g; the row keeps the change
    unless its error rose, and stops at the first rejected change (the released code's loop, which repeats the
    same rejected step until every row of the group is stuck, gives the same decisions)."""
    up = up.clone()
    delta = torch.where(up, d_ceil, d_floor)
    dh = delta @ h   # kept up to date: one flip changes it by c H[j], the error by 2 c (delta H)_j + c^2 H_jj
    diag = h.diagonal()
    rows = torch.arange(len(up), device=up.device)   # the rows still refining (a row stops at its first rejection)
    flips = 0
    for _ in range(iterations):
        if not len(rows):
            break
        dl, dr = delta[rows], dh[rows]
        g = 2.0 * dr
        g = torch.where(dl * g > 0, g, torch.zeros_like(g))
        has = (g != 0).any(dim=1)
        j = g.abs().argmax(dim=1)
        at = torch.arange(len(rows), device=up.device)
        v = dl[at, j] - g[at, j]
        fl, ce = d_floor[rows, j], d_ceil[rows, j]
        up_j = (v - ce).abs() <= (v - fl).abs()
        c = torch.where(up_j, ce, fl) - dl[at, j]
        rise = 2.0 * c * dr[at, j] + c * c * diag[j]
        keep = has & (rise <= 0) & (c != 0)   # an unchanged row would repeat the same step: it is done too
        rows, j, c, up_j = rows[keep], j[keep], c[keep], up_j[keep]
        flips += len(rows)
        delta[rows, j] += c
        up[rows, j] = up_j
        dh[rows] += c[:, None] * h[j]
    return up, flips


def quantize_by_halves(w: torch.Tensor, b: torch.Tensor | None, xq: torch.Tensor, choices: RoundingChoices,
                       lam: float, refine: bool, iterations: int, rows_per_group: int, moment: str = "raw",
                       solver: str = "solve64") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """Step 2 (module docstring) on W (m, d), b (m) or None and inputs xq (N, d). Returns (the float weights each
    column had when it was quantized, the rounding decisions up (m, d, bool: the code is floor(W / scale) + up), the
    final bias, the refinement's accepted flips); quantizing the returned weights with those decisions gives the
    layer's final weights. Without a bias the last column is left after the halves and takes nearest rounding (the
    released code rounds it when it re-enables weight quantization)."""
    has_bias, dt = b is not None, _dtype(solver)
    cur = (torch.cat([w, b[:, None]], dim=1) if has_bias else w).to(dt)
    a = with_ones(xq.to(dt), has_bias)
    m, n = cur.shape
    d = n - int(has_bias)
    at_quant, up_all = w.clone(), torch.zeros(m, d, dtype=torch.bool, device=w.device)
    start, flips = 0, 0
    while n - start > 1:
        half = torch.arange(start, start + (n - start) // 2, device=w.device)
        rest = torch.arange(start + len(half), n, device=w.device)
        now = cur[:, :d].to(w.dtype)   # the weights as the quantizer sees them
        v_floor, v_ceil, nearest = choices(now)
        d_floor, d_ceil = (v_floor.to(dt) - cur[:, :d])[:, half], (v_ceil.to(dt) - cur[:, :d])[:, half]
        up = nearest[:, half].clone()
        if refine:
            h = second_moment(a[:, half], moment).to(d_floor)
            for r0 in range(0, m, rows_per_group):
                rs = slice(r0, r0 + rows_per_group)
                up[rs], f = refine_rounding(d_floor[rs], d_ceil[rs], up[rs], h, iterations)
                flips += f
        delta1 = torch.where(up, d_ceil, d_floor)
        at_quant[:, half], up_all[:, half] = now[:, half], up
        cur[:, half] = torch.where(up, v_ceil[:, half], v_floor[:, half]).to(dt)   # exactly the quantized values
        i1, i2 = a[:, half], a[:, rest]
        delta2 = -solve_ridge(i2.T @ i2, (i2.T @ i1) @ delta1.T, lam, solver)
        cur[:, rest] += delta2.T.to(dt)
        start += len(half)
    if not has_bias:
        now = cur[:, :d].to(w.dtype)
        _, _, nearest = choices(now)
        at_quant[:, d - 1], up_all[:, d - 1] = now[:, d - 1], nearest[:, d - 1]
    return at_quant, up_all, (cur[:, d].to(w.dtype) if has_bias else None), flips
