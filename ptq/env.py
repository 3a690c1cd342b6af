"""What a result needs to be reproducible: library versions, project commit, device."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

import ptq

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=10)
        sha = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def strict_float32() -> None:
    """Full float32 matmuls and convolutions on CUDA (no TF32), as in the reference: the calibration scores compare
    float outputs with quantized ones, and TF32's 10-bit mantissa would blur them."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def resolve_device(name: str = "auto") -> torch.device:
    """`auto | cpu | cuda | cuda:N` -> a torch.device (auto: cuda when available). On CUDA, TF32 is switched off."""
    from ptq.errors import PTQError

    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise PTQError(f"unknown device '{name}'; valid: auto, cpu, cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PTQError(f"device={name} asked for but CUDA is not available; valid here: auto, cpu")
    device = torch.device(name)
    if device.type == "cuda":
        strict_float32()
    return device


def environment(device: torch.device | str = "cpu") -> dict:
    import timm

    dev = torch.device(device)
    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "ptq": ptq.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "hostname": platform.node(),
    }


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: taskset, SLURM, containers), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
