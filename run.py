"""Entry point: `python run.py [group=option ...] [key=value ...]`, or `python run.py -m ...` for grids.

A thin Hydra shim around `ptq.app.run`; see README.md for the config groups and the exit codes.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ptq.cli import check_argv, run_job
from ptq.multirun import exit_code


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg)


if __name__ == "__main__":
    sys.argv[1:] = check_argv(sys.argv[1:])  # deprecated model aliases replaced
    main()
    sys.exit(exit_code())  # a multirun with failed jobs exits non-zero
