"""Regenerate the regression parameter files of tests/test_regression.py: `python -m tests.regression.make_params`.

Each case calibrates a test-bed model with reduced search settings and stores the calibrated quantizer
parameters (quant_params.safetensors, renamed to <case>.safetensors) and the top-1 / agreement on the first
`max_test` test images (<case>.json). The committed files were written by the code before the config
refactor (issue 9, commit 59ecd47 + the run-folder fix); the test checks that every later version of the core
chooses the same parameters. Regenerate only when a change of numbers is intended, and say so in the commit.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REDUCED = ["calib.n_images=8", "quantizer.search.n=20", "quantizer.search.rounds=2", "data.max_test=1000",
           "logger=none", "progress=false"]
# case -> overrides; "outside" is a model shape the project never trained (random weights, seed 0)
CASES: dict[str, list[str]] = {
    "vit_ptq4vit_official_w6a6": ["model=fmnist_vit", "quantizer=ptq4vit", "quantizer.compat=official", "bits=w6a6",
                                  "metric=hessian"],
    "vit_ptq4vit_paper_w4a4": ["model=fmnist_vit", "quantizer=ptq4vit", "bits=w4a4"],
    "swin_ptq4vit_official_w4a4": ["model=fmnist_swin", "quantizer=ptq4vit", "quantizer.compat=official",
                                   "bits=w4a4"],
    "swin_base_ptq_w6a6": ["model=fmnist_swin", "quantizer=base_ptq", "bits=w6a6"],
    "outside_ptq4vit_official_w6a6": ["model=fmnist_vit", "model.checkpoint=null", "model.kwargs.embed_dim=48",
                                      "model.kwargs.depth=2", "quantizer=ptq4vit", "quantizer.compat=official",
                                      "bits=w6a6", "metric=mse"],
}


def run_case(overrides: list[str], out: Path) -> dict:
    from ptq.app import run
    from ptq.cli import compose_config

    return run(compose_config([*overrides, *REDUCED]), out)


def main() -> None:
    for case, overrides in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            res = run_case(overrides, Path(tmp))
            shutil.copy(Path(tmp) / "quant_params.safetensors", HERE / f"{case}.safetensors")
        (HERE / f"{case}.json").write_text(json.dumps({"overrides": overrides, "top1": res["top1"],
                                                       "agreement": res["agreement"]}, indent=1) + "\n")
        print(case, res["top1"], res["agreement"])


if __name__ == "__main__":
    main()
