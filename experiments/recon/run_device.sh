#!/usr/bin/env bash
# Issue 13 on a lent GPU machine (device tool), one call: the grid `experiment=recon` on both test-bed models
# (device=cuda, 12 jobs at once through the joblib launcher, 2000 test images), then the ViT-S/224 W4A4
# reconstruction timing (experiments/recon/vit_s_gpu.py). Results: $OUT/recon_multirun.tgz, $OUT/vit_s_gpu.json.
# Needs, carried: .whl/ (hydra-core 1.3.8, omegaconf 2.3.1, antlr4 4.9.3, timm 1.0.31, hydra-joblib-launcher 1.2.0,
# joblib 1.4.2 wheels; see experiments/gpu_check.sh) and .devcarry/fashion-mnist/ (a copy of
# /usr/share/datasets/fashion-mnist).
#   run tool: carry [".whl", ".devcarry"], command: bash experiments/recon/run_device.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
source experiments/device_env.sh
GRID_S=${GRID_S:-300}
timeout "$GRID_S" python3 run.py experiment=recon model=fmnist_vit,fmnist_swin device=cuda logger=none progress=false \
  threads=1 data.max_test=2000 hydra/launcher=joblib hydra.launcher.n_jobs=12 > "$OUTDIR/grid.log" 2>&1
echo "grid exit $?; finished jobs: $(find multirun/recon -name results.json | wc -l)"
tail -3 "$OUTDIR/grid.log"
find multirun/recon \( -name results.json -o -name run.log -o -path '*/.hydra/*' \) -print0 \
  | tar czf "$OUTDIR/recon_multirun.tgz" --null -T -
timeout 100 python3 experiments/recon/vit_s_gpu.py --iters 100 --out "$OUTDIR" 2>&1 | tail -3
ls -la "$OUTDIR"
