"""`python -m ptq.report SWEEP_DIR...`: the command line of ptq/report/cli.py."""
import sys

from ptq.report.cli import main

sys.exit(main())
