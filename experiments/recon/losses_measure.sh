#!/bin/bash
# fmnist_vit W4A4 RepQ-ViT + BRECQ, 100 iterations per unit, each reconstruction loss (threads=1)
cd "$(dirname "$0")/../.."
mkdir -p ${RUNS:-outputs/recon_losses}
for loss in none mse fisher aph fisher_dplr; do
  if [ $loss = none ]; then r="recon=none"; else r="recon=brecq recon.loss=$loss"; fi
  /usr/bin/time -f "$loss wall %e s" env PYTHONPATH=$PWD WANDB_MODE=disabled nice -n 10 ${PYTHON:-python} run.py \
    model=fmnist_vit quantizer=repq_vit bits=w4a4 $r recon.iters=100 seed=0 calib.seed=0 data.max_test=1000 threads=1 \
    logger=none progress=false force=true hydra.run.dir=${RUNS:-outputs/recon_losses}/$loss > ${RUNS:-outputs/recon_losses}/$loss.log 2>&1
  tail -1 ${RUNS:-outputs/recon_losses}/$loss.log
done
