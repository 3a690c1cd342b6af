"""ONNX Runtime float32 against int8 (the lab's QDQ export) on the same graph and session options.

    python experiments/export/benchmark.py [--threads 1] [--models fmnist_vit,...] [--n1 30 --n32 5] [--out PATH]

Each model is exported twice from the same timm module: float (torch's TorchScript exporter) and int8
(`base_ptq_deploy` W8A8 quantizers, min-max initialized on 4 random images: speed does not depend on the scale
values; python -m ptq.export gives the calibrated graph of a run). Both run in ONNX Runtime on the CPU with all graph
optimizations and fixed threads; after a warm-up, float and int8 runs are interleaved (the machine is shared) and
the median of N is reported, at batch 1 and 32. Writes benchmark.md / benchmark.csv beside this file (or PATH.md /
PATH.csv), with the CPU model, its instruction-set flags and the 1-minute load average before and after each row.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ptq.cli import compose_config
from ptq.export import export_modules, write_onnx
from ptq.export.runtime import INTEGER_KERNELS, interleaved_medians, kernel_counts, session
from ptq.models import build_model
from ptq.quant import quant_ops, quantize_model
from ptq.quant.config import resolve_ptq_config
from ptq.quant.modules import QLinear, QMatMul

HERE = Path(__file__).resolve().parent
MODELS = {"fmnist_vit": True, "fmnist_swin": True, "vit_s_224": False, "deit_s_224": False, "swin_t_224": False}
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
         "amx_bf16")


def cpu_info() -> tuple[str, list[str]]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
                platform.processor())
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return name, [f for f in FLAGS if f in flags]


def build(key: str) -> tuple[torch.nn.Module, object]:
    # a paper model's config group with random weights (no download); a test-bed with its checkpoint
    over = [f"model={key}"] if MODELS[key] else [f"model={key}", "model.pretrained=false", "model.checkpoint=null"]
    cfg = compose_config([*over, "quantizer=base_ptq_deploy", "bits=w8a8", "logger=none", "progress=false"])
    return build_model(cfg.model, "cpu"), cfg


def int8_copy(model: torch.nn.Module, cfg, shape) -> tuple[torch.nn.Module, int]:
    """(the export form of a W8A8 copy, its number of quantized linears + attention matmuls)."""
    import copy

    q = copy.deepcopy(model)
    pcfg = dataclasses.replace(resolve_ptq_config(cfg), recipe=["init_minmax"])
    x = torch.randn(4, *shape)
    quantize_model(q, pcfg, x, torch.zeros(4, dtype=torch.long), device=torch.device("cpu"), progress=False)
    matmuls = sum(isinstance(op, (QLinear, QMatMul)) for op in quant_ops(q).values())
    return export_modules(q), matmuls


def float_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n1", type=int, default=30, help="timed runs at batch 1 (each of float and int8)")
    p.add_argument("--n32", type=int, default=5, help="timed runs at batch 32")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", type=Path, default=HERE / "benchmark")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cpu, flags = cpu_info()
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for key in args.models.split(","):
            model, cfg = build(key)
            shape = tuple(model.default_cfg["input_size"])
            example = torch.zeros(1, *shape)
            fpath = float_onnx(model, example, Path(d) / f"{key}_fp32.onnx")
            int8, matmuls = int8_copy(model, cfg, shape)
            qpath = write_onnx(int8, example, Path(d) / f"{key}_int8.onnx")
            counts = kernel_counts(qpath)
            sessions = {"fp32": session(fpath, args.threads), "int8": session(qpath, args.threads)}
            for batch, n in ((1, args.n1), (32, args.n32)):
                load_before = os.getloadavg()[0]
                x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
                med = interleaved_medians(sessions, x, n, args.warmup)   # float / int8 take turns
                rows.append({"model": key, "batch": batch, "runs": n, "threads": args.threads,
                             "fp32_ms": round(1e3 * med["fp32"], 2), "int8_ms": round(1e3 * med["int8"], 2),
                             "speedup": round(med["fp32"] / med["int8"], 2),
                             "integer_kernels": sum(counts[k] for k in INTEGER_KERNELS), "quantized_matmuls": matmuls,
                             "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)})
                print(rows[-1], flush=True)
    load1 = os.getloadavg()
    out = args.out
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import onnxruntime

    lines = ["# ONNX Runtime float32 vs int8 (QDQ export of base_ptq_deploy W8A8)", "",
             f"CPU: {cpu}; flags: {', '.join(flags) or 'none of ' + ', '.join(FLAGS)}; onnxruntime "
             f"{onnxruntime.__version__}, torch {torch.__version__}; {args.threads} intra-op thread(s), "
             f"graph optimizations ORT_ENABLE_ALL; {args.warmup} warm-up runs, then float / int8 interleaved, median.",
             f"Load average (1 min) before / after: {load0[0]:.1f} / {load1[0]:.1f} on {os.cpu_count()} cores "
             f"(shared with other jobs: absolute times are noisy, the ratio less so).", "",
             "Paper models: timm with random weights (model.pretrained=false, no download); the quantizers min-max "
             "initialized on 4 random images (speed does not depend on their values). Test-beds: their checkpoints.",
             "", "| model | batch | runs (median of) | fp32 ms | int8 ms | speed-up | integer kernels / quantized "
             "matmuls | load before / after |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['runs']} | {r['fp32_ms']} | {r['int8_ms']} | {r['speedup']}x | "
              f"{r['integer_kernels']} / {r['quantized_matmuls']} | {r['load_before']} / {r['load_after']} |"
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
