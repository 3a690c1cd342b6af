"""The 95 % intervals of ptq/intervals.py against values worked out by hand (and scipy's own Wilson interval)."""
from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from ptq.intervals import t_interval, wilson_interval


def test_wilson_by_hand():
    # 880 of 1,000 right, z = 1.959964: centre (0.88 + z^2/2000) / (1 + z^2/1000) = 0.878546,
    # half-width z / (1 + z^2/1000) * sqrt(0.88 * 0.12 / 1000 + z^2 / 4e6) = 0.020155
    low, high = wilson_interval(88.0, 1000)
    assert (low, high) == pytest.approx((85.8391, 89.8701), abs=1e-3)
    ci = binomtest(880, 1000).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((100 * ci.low, 100 * ci.high), abs=1e-9)


@pytest.mark.parametrize("k, n", [(0, 50), (50, 50), (1772, 2000), (3, 7)])
def test_wilson_matches_scipy_and_stays_in_range(k, n):
    low, high = wilson_interval(100.0 * k / n, n)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((100 * ci.low, 100 * ci.high), abs=1e-9)
    assert 0.0 <= low <= 100.0 * k / n <= high <= 100.0


def test_wilson_without_images_is_nan():
    assert all(math.isnan(v) for v in wilson_interval(88.0, 0))


def test_t_interval_by_hand():
    # two runs 89.5, 89.7: mean 89.6, s = sqrt(0.02); t(0.975, 1) = 12.7062 (table) -> half 12.7062 * s / sqrt(2)
    low, high = t_interval(89.6, 0.02 ** 0.5, 2)
    assert (low, high) == pytest.approx((89.6 - 1.27062, 89.6 + 1.27062), abs=1e-4)
    # three runs, s = 0.3: t(0.975, 2) = 4.3027 -> half 4.3027 * 0.3 / sqrt(3) = 0.74525
    assert t_interval(88.0, 0.3, 3) == pytest.approx((88.0 - 0.74525, 88.0 + 0.74525), abs=1e-4)
    assert all(math.isnan(v) for v in t_interval(88.0, float("nan"), 1))
