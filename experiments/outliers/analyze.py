"""Measured post-LayerNorm channel ranges of the test-bed models with and without each outlier profile (issue 10):
the command around `ptq.outlier_analysis.write_analysis` (ranges.md / ranges.csv and the PNGs, here by default).

    python experiments/outliers/analyze.py [--models fmnist_vit fmnist_swin] [--profiles none mild deit_like severe]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from ptq.outlier_analysis import MODELS, PROFILES, write_analysis  # noqa: E402

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--profiles", nargs="+", default=list(PROFILES))
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--dpi", type=int, default=80)
    p.add_argument("--override", action="append", default=[], help="extra Hydra override, e.g. calib.n_images=8")
    args = p.parse_args(argv)
    write_analysis(args.models, args.profiles, args.out, args.override, args.dpi)
    return 0


if __name__ == "__main__":
    sys.exit(main())
