"""Tables in the paper's layout from sweep folders: `python -m ptq.report SWEEP_DIR... [--out DIR] [--format ...]`.

The command line of ptq.report (ptq/report/__main__.py runs it): reads the folders, prints the markdown, writes
the files of `--out` and, with `--wandb`, uploads the tables."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptq.report.data import FORMATS, LAYOUTS
from ptq.report.renderers import report_markdown, write_report
from ptq.report.tables import build_report
from ptq.results_file import RESULTS_FILE


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ptq.report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweeps", nargs="+", metavar="SWEEP_DIR", help="sweep folders (searched recursively)")
    p.add_argument("--out", type=Path, default=None, help="write table/drop .md/.csv/.tex, cells.csv, runs.csv")
    p.add_argument("--format", default=",".join(FORMATS), help="comma-separated subset of md,csv,tex")
    p.add_argument("--layout", default="auto", choices=LAYOUTS)
    p.add_argument("--wandb", action="store_true",
                   help="also log the tables to the sweep's W&B group (mode from WANDB_MODE, default offline)")
    p.add_argument("--wandb-group", default=None, help="W&B group (default: the first sweep folder's name)")
    args = p.parse_args(argv)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        print(f"error: unknown format {', '.join(bad)}; valid: {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        rep = build_report(args.sweeps, args.layout)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not len(rep["records"]):
        skipped = f" ({len(rep['unreadable'])} unreadable)" if len(rep["unreadable"]) else ""
        print(f"error: no readable {RESULTS_FILE} under {', '.join(args.sweeps)}{skipped}", file=sys.stderr)
        return 2
    print(report_markdown(rep, args.sweeps))
    if args.out is not None:
        for path in write_report(rep, args.out, formats, args.sweeps):
            print(f"wrote {path}")
    if args.wandb:
        from ptq.loggers.wandb_report import log_report

        where = log_report(rep, args.sweeps, group=args.wandb_group, out=args.out)
        print(f"W&B: {where}")
    return 0
