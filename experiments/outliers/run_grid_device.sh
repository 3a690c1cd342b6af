#!/usr/bin/env bash
# experiment=outliers on a lent GPU machine (device tool), full test split: the grid of conf/experiment/outliers.yaml
# with device=cuda, then the results (results.json, run.log, .hydra of every job) as $OUT/outliers_multirun.tgz.
# Needs, carried: .whl/ (hydra-core 1.3.8, omegaconf 2.3.1, antlr4 4.9.3, timm 1.0.31 wheels; see
# experiments/gpu_check.sh) and .devcarry/fashion-mnist/ (a copy of /usr/share/datasets/fashion-mnist).
#   run tool: carry [".whl", ".devcarry"], command: bash experiments/outliers/run_grid_device.sh
# (The device tool sends the session's own checkout: from another worktree, copy this tree with .whl/ and
# .devcarry/ into an ignored folder of that checkout, e.g. .devcarry/outliers/wt, carry it and cd there first.)
# The committed results (experiments/outliers/) came from this script on an NVIDIA H200 in 210 s.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "error: installing the wheels in .whl/ failed"; exit 1; }
export PYTHONPATH=/tmp/site
mkdir -p /usr/share/datasets && cp -r .devcarry/fashion-mnist /usr/share/datasets/
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
OUTDIR=${OUT:-/tmp}
python3 run.py experiment=outliers model=fmnist_vit,fmnist_swin device=cuda logger=none progress=false "$@" > "$OUTDIR/grid.log" 2>&1
echo "grid exit $?"; grep -c '"status": "ok"' $(find multirun/outliers -name results.json) | grep -c ':1$'
tail -5 "$OUTDIR/grid.log"
find multirun/outliers \( -name results.json -o -name run.log -o -path '*/.hydra/*' \) -print0 \
  | tar czf "$OUTDIR/outliers_multirun.tgz" --null -T -
ls -la "$OUTDIR"
