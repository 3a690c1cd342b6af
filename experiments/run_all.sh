#!/usr/bin/env bash
# Regenerate the committed test-bed results under experiments/ (see docs/sweeps.md), one grid at a time.
#   experiments/run_all.sh              every grid, its tables, the plots and the metric-fidelity study
#   experiments/run_all.sh table1 ...   some grids only (then their tables and the plots)
# Jobs whose results exist are skipped (resume), so an interrupted run continues where it stopped.
# RUN_ARGS adds overrides to every job, e.g. RUN_ARGS=threads=1 to leave a core free.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export MPLBACKEND=Agg WANDB_MODE=disabled
ALL=(table1 ablation metrics calib_size seeds compat methods components)
SELECTED=("${@:-${ALL[@]}}")

for name in "${SELECTED[@]}"; do
  extra=()
  # table 1 and the methods table have a row per test-bed model
  { [ "$name" = table1 ] || [ "$name" = methods ]; } && extra=(model=fmnist_vit,fmnist_swin)
  echo "== $name"
  # shellcheck disable=SC2086  # RUN_ARGS is a list of overrides
  "$PY" run.py "experiment=$name" "${extra[@]}" logger=none progress=false ${RUN_ARGS:-}
  "$PY" -m ptq.report "multirun/$name" --out "experiments/$name" > /dev/null
  echo "   tables in experiments/$name/"
done

"$PY" notebooks/ablation_plots.py
if [ $# -eq 0 ]; then
  "$PY" notebooks/metric_fidelity.py
fi
