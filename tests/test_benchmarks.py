"""The benchmark scripts' arithmetic: the full-setting extrapolation of experiments/benchmark_paper_models.py."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "benchmark_paper_models.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_paper_models", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(n: int, search: float, rounds: int = 1) -> dict:
    return {"model": "m", "n": n, "rounds": rounds, "init_s": 3.0, "capture_s": 27.0, "search_s": search,
            "calib_s": 30.0 + search}


def test_extrapolation_by_hand(bench):
    # one more candidate costs (30 - 14) / (6 - 2) = 4 s per round; a full round is 14 + (100 - 2) * 4 = 406 s;
    # three rounds plus the n-independent init and capture: 3 + 27 + 3 * 406 = 1248 s.
    est = bench.extrapolate(_run(2, 14.0), _run(6, 30.0), 100, 3)
    assert est["per_candidate_step_s"] == pytest.approx(4.0)
    assert est["full_s"] == pytest.approx(1248.0)
    assert est["full_kind"] == "extrapolated"


def test_extrapolation_needs_two_sizes_and_keeps_measurements(bench):
    assert math.isnan(bench.extrapolate(_run(2, 14.0), None, 100, 3)["full_s"])
    assert math.isnan(bench.extrapolate(_run(2, 14.0), {**_run(6, 1.0), "error": "timed out"}, 100, 3)["full_s"])
    full = bench.extrapolate(_run(100, 500.0, rounds=3), None, 100, 3)
    assert (full["full_s"], full["full_kind"]) == (530.0, "measured")


def test_markdown_lists_failed_jobs(bench):
    ok = {**_run(2, 14.0), "device": "cpu", "images": 32, "input": 224, "params_m": 22.1, "rss_before_mb": 800.0,
          "peak_rss_mb": 7000.0, "threads": 2, "load_avg": 0.5, "capture_passes": 7,
          **bench.extrapolate(_run(2, 14.0), _run(6, 30.0), 100, 3)}
    bad = {"model": "vit_b_384", "device": "cpu", "images": 32, "n": 2, "rounds": 1, "error": "exit 1: boom"}
    text = bench.markdown([ok, bad], "T", "note")
    assert "| 27.00 (7) |" in text and "1248 (extrapolated)" in text
    assert "exit 1: boom" in text


def test_estimate_full_puts_the_estimate_on_the_smallest_run(bench):
    small, large, failed = _run(2, 14.0), _run(6, 30.0), {"model": "m", "n": 4, "error": "timed out"}
    bench.estimate_full([large, failed, small])
    assert (small["full_s"], small["full_kind"]) == (pytest.approx(1248.0), "extrapolated")
    assert math.isnan(large["full_s"]) and large["full_kind"] == "-"
    assert "full_s" not in failed
