# Sourced (from the repository root) by the scripts that run on a lent GPU machine (device tool): installs the
# carried wheels of .whl/ (hydra-core, omegaconf, antlr4, timm, hydra-joblib-launcher, joblib; see
# experiments/gpu_check.sh) into /tmp/site, puts the carried Fashion-MNIST copy (.devcarry/fashion-mnist) where
# the data code looks, prints the GPU and sets OUTDIR ($OUT there, /tmp elsewhere).
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "error: installing the wheels in .whl/ failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /usr/share/datasets && cp -r .devcarry/fashion-mnist /usr/share/datasets/
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
OUTDIR=${OUT:-/tmp}
