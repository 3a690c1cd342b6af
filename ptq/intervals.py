"""95 % intervals of a table cell, so a reader can tell a ranking from noise.

Two sources of noise, two intervals (ptq.report puts them in cells.csv as `ci95_low`, `ci95_high`, `ci95`):
- one run (n = 1): top-1 is a proportion of N test images, so its interval is the binomial one; Wilson's score
  interval (Wilson 1927), which, unlike the normal approximation, stays inside [0, 100] near 0 or 100 %;
- several runs (n > 1, calibration seeds): Student's t interval of the mean over the runs,
  mean ± t(0.975, n - 1) * s / sqrt(n) with the sample std s (ddof = 1). It is the spread over seeds only; each
  run's own test-set noise is in the binomial interval above.
"""
from __future__ import annotations

import math

from scipy import stats

LEVEL = 0.95


def wilson_interval(percent: float, n_images: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval (in %) of a top-1 of `percent` % measured on `n_images` test images."""
    if not n_images or n_images < 1 or percent != percent:
        return float("nan"), float("nan")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p, n = percent / 100.0, float(n_images)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100.0 * (centre - half), 100.0 * (centre + half)


def t_interval(mean: float, std: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Student's t interval of a mean over `n` >= 2 runs with sample std `std`."""
    if n < 2 or std != std:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half
