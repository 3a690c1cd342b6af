#!/usr/bin/env bash
# What the CPU could not run (issues 10, 12, 13), on a lent GPU machine (device tool), one call:
#   lane A (12 jobs at once): experiment=recon on the stressed test-beds at W4A4, the cells the CPU did not run
#           (experiments/recon/grid.md has fmnist_vit+severe, fmnist_vit+deit_like, fmnist_swin+severe none /
#           brecq): the qdrop column of fmnist_swin+severe, and fmnist_swin+deit_like whole -- 48 jobs, 2000 test
#           images, like experiments/recon/grid;
#   lane B (4 jobs at once): experiment=outliers for repq_vit, adalog on fmnist_swin, all four profiles (48 jobs,
#           full test split, like experiments/outliers; their fmnist_vit rows ran on the CPU).
# A small AdaLog job runs first so that a CUDA-only failure shows at the top of the output. Each lane stops at its
# deadline; finished jobs come back as $OUT/<experiment>_multirun.tgz (results.json, run.log, .hydra).
# Needs, carried: .whl/ (hydra-core 1.3.8, omegaconf 2.3.1, antlr4 4.9.3, timm 1.0.31, hydra-joblib-launcher
# 1.2.0, joblib 1.4.2 wheels; see experiments/gpu_check.sh) and .devcarry/fashion-mnist/ (a copy of
# /usr/share/datasets/fashion-mnist).
#   run tool: carry [".whl", ".devcarry"], command: bash experiments/run_device_grids.sh, timeout_s 580
# Not run yet (two sessions without a device loan); the grids it first held (fmnist_swin RepQ-ViT / AdaLog
# reconstruction rows, the methods table's fmnist_swin BasePTQ / PTQ4ViT cells) ran on the 2 CPU cores instead.
set -uo pipefail
cd "$(dirname "$0")/.."
source experiments/device_env.sh
LANE_S=${LANE_S:-470}
COMMON="device=cuda logger=none progress=false threads=1 hydra/launcher=joblib"
start=$(date +%s)

python3 run.py quantizer=adalog bits=w4a4 recon=brecq recon.iters=2 recon.n_images=64 data.max_test=200 \
  device=cuda logger=none progress=false hydra.run.dir=/tmp/smoke > "$OUTDIR/smoke.log" 2>&1
echo "adalog cuda smoke exit $? ($(( $(date +%s) - start )) s)"; tail -4 "$OUTDIR/smoke.log"

lane_a() {
  local recon="experiment=recon quantizer=base_ptq,ptq4vit,repq_vit,adalog bits=w4a4 data.max_test=2000 $COMMON"
  python3 run.py $recon model=fmnist_swin model/outliers=severe recon=qdrop hydra.launcher.n_jobs=12 \
    hydra.sweep.dir=multirun/recon > "$OUTDIR/recon.log" 2>&1
  python3 run.py $recon model=fmnist_swin model/outliers=deit_like recon=none,brecq,qdrop hydra.launcher.n_jobs=12 \
    hydra.sweep.dir=multirun/recon >> "$OUTDIR/recon.log" 2>&1
}
lane_b() {
  python3 run.py experiment=outliers model=fmnist_swin quantizer=repq_vit,adalog $COMMON hydra.launcher.n_jobs=4 \
    > "$OUTDIR/outliers.log" 2>&1
}
export -f lane_a lane_b; export OUTDIR COMMON
timeout "$LANE_S" bash -c lane_a & a=$!
timeout "$LANE_S" bash -c lane_b & b=$!
wait $a; echo "lane A exit $?"; wait $b; echo "lane B exit $?"
echo "wall $(( $(date +%s) - start )) s"
for e in recon outliers; do
  [ -d "multirun/$e" ] || continue
  echo "$e: $(find multirun/$e -name results.json | wc -l) results, $(grep -l '"status": "ok"' $(find multirun/$e -name results.json) | wc -l) ok"
  find "multirun/$e" \( -name results.json -o -name run.log -o -path '*/.hydra/*' \) -print0 \
    | tar czf "$OUTDIR/${e}_multirun.tgz" --null -T -
done
grep -h "failed\|Error" "$OUTDIR"/*.log | sort | uniq -c | head -20
ls -la "$OUTDIR"
