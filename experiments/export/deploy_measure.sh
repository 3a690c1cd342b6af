#!/bin/bash
# The deploy table (experiments/export/deploy.md): W8A8 runs of each method's deployable preset on both test-beds
# (full test split, 32 calibration images, seed 0, threads=1), reconstruction (100 steps per unit) on top, and the
# methods' own presets that do not deploy; then deploy_table.py exports, checks parity and times each.
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-outputs/export_deploy}
mkdir -p $RUNS
run() {  # run NAME ARGS...
  local name=$1; shift
  [ -f $RUNS/$name/results.json ] || env PYTHONPATH=$PWD WANDB_MODE=disabled nice -n 10 ${PYTHON:-python} run.py \
    bits=w8a8 seed=0 threads=1 logger=none progress=false hydra.run.dir=$RUNS/$name "$@" > $RUNS/$name.log 2>&1
  echo "$name: $(grep -h 'top-1 / fp32' $RUNS/$name.log)"
}
PRESETS=(  # NAME ARGS (the table's row order); the cheap ones first
  "base_ptq_deploy quantizer=base_ptq_deploy"
  "repq_vit_deploy quantizer=repq_vit_deploy"
  "repq_vit quantizer=repq_vit"
  "base_ptq_deploy_brecq quantizer=base_ptq_deploy recon=brecq recon.iters=100"
  "repq_vit_deploy_qdrop quantizer=repq_vit_deploy recon=qdrop recon.iters=100"
  "ptq4vit_deploy quantizer=ptq4vit_deploy"
  "ptq4vit quantizer=ptq4vit"
  "adalog quantizer=adalog")
for p in "${PRESETS[@]}"; do
  for model in fmnist_vit fmnist_swin; do run ${model}_${p%% *} model=$model ${p#* }; done
done
order=()
for model in fmnist_vit fmnist_swin; do
  for p in base_ptq_deploy base_ptq_deploy_brecq repq_vit_deploy repq_vit_deploy_qdrop ptq4vit_deploy repq_vit ptq4vit \
      adalog; do
    [ -f $RUNS/${model}_$p/results.json ] && order+=($RUNS/${model}_$p)
  done
done
env PYTHONPATH=$PWD WANDB_MODE=disabled nice -n 10 ${PYTHON:-python} experiments/export/deploy_table.py --threads 1 \
  ${TABLE_ARGS:-} "${order[@]}"
