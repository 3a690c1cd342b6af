#!/usr/bin/env bash
# Issue 23's device rows in one call on a lent GPU machine (device tool): ViT-S/224 and ViT-B/384 (random weights),
# PTQ4ViT W6A6 full search, RepQ-ViT and AdaLog W4A4 calibration, BRECQ W4A4 reconstruction (--recon-iters steps
# per unit, extrapolated to 20000), peak memory; table in $OUT/device_benchmark.md (+ .json, .log).
# The wheels travel in .whl/ (see experiments/gpu_check.sh for how to prepare them once, here).
# Device command (run tool, carry [".whl"], timeout_s 600):
#   bash experiments/speed/device_benchmark.sh
# Locally, the CPU check: PYTHON=/work/main/.venv/bin/python bash experiments/speed/device_benchmark.sh --tiny
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${PYTHON:-}" ]; then
  source experiments/device_env.sh
  PY=python3
else
  PY=$PYTHON
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled
  OUTDIR=${OUT:-experiments/speed}
fi
mkdir -p "$OUTDIR"
"$PY" experiments/speed/device_benchmark.py --device cuda --budget 540 --out "$OUTDIR" "$@" 2>&1 \
  | tee "$OUTDIR/device_benchmark.log"
