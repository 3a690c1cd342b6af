#!/usr/bin/env bash
# GPU check of issue 4 on a lent machine (device tool, nvidia-h100-x1), one call well under 8 minutes:
# PTQ4ViT W6A6 calibration (random weights, 32 images) of ViT-S/224 and ViT-B/384 on CUDA at n=100, 3 rounds
# (seconds, peak GPU memory), and ViT-S/224 on the machine's 16 CPU cores for the ratio. Results: $OUT/gpu_check.md
# (+ .csv, .json, gpu_check.log); without $OUT, experiments/.
#
# That machine has Python 3.12 with torch 2.11 (CUDA), torchvision, numpy, pillow, PyYAML, safetensors,
# huggingface_hub and tqdm, but no hydra-core / omegaconf / antlr4 and maybe another timm. They travel as pure-Python
# wheels in .whl/ (git-ignored). Prepare once, here (pip with network):
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       -d .whl hydra-core==1.3.8 omegaconf==2.3.1 timm==1.0.31
#   .venv/bin/python -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
# Device command (run tool, carry [".whl"], timeout_s 540):
#   bash experiments/gpu_check.sh
# Locally (the venv has everything): PYTHON=.venv/bin/python bash experiments/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUTDIR=${OUT:-experiments}
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1 && [ -z "${PYTHON:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "error: installing the wheels in .whl/ failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import torch, torchvision, timm, hydra, omegaconf, safetensors; print('torch', torch.__version__, \
'timm', timm.__version__, 'hydra', hydra.__version__, 'cuda', torch.cuda.is_available())" \
  || { echo "error: a package is missing (see the header of $0)"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
mkdir -p "$OUTDIR"
# the project from this checkout (nothing is installed on the lent machine)
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" experiments/gpu_check.py --out "$OUTDIR" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
