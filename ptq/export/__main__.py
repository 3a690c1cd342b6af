"""python -m ptq.export RUN_DIR [--out FILE] [--parity] [--max-test N]: a finished run as an ONNX QDQ graph.

Rebuilds the run's model from its results.json config exactly as the run did (model, outliers, wrapping), loads
its quant_params.safetensors (and model_weights.safetensors where its recipe changed the float weights: RepQ-ViT's
LayerNorm fold exports as those changed weights), refuses a non-deployable run (one line naming the slots and
quantizers), writes RUN_DIR/model.onnx (or FILE) and, with --parity, runs it in ONNX Runtime on the run's test
images: top-1, agreement with the simulated and the float model, max |logit difference| (RUN_DIR/export.json).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

import ptq.plugins  # noqa: F401  (the plug-in stages: a run's config resolves with them)
from ptq.errors import PTQError

ONNX_FILE = "model.onnx"
PARITY_FILE = "export.json"


def rebuild_run(run_dir: Path):
    """(config, calibrated model) of a finished quantized run."""
    from ptq.export.deployability import refusal
    from ptq.export.float_weights import WEIGHTS_FILE, load_model_weights, match_folded_layouts
    from ptq.models import build_model
    from ptq.quant import load_quant_params, wrap_model
    from ptq.quant.config import resolve_ptq_config
    from ptq.quant.stage import TRANSFORMING_STAGES
    from ptq.results_file import PARAMS_FILE, RESULTS_FILE, read_results

    if not (run_dir / RESULTS_FILE).is_file():
        raise PTQError(f"{run_dir} holds no {RESULTS_FILE}; valid: a finished run folder")
    res, why = read_results(run_dir / RESULTS_FILE)
    if res is None:
        raise PTQError(f"{run_dir / RESULTS_FILE} {why}")
    cfg = OmegaConf.create(res["config"])
    if not cfg.quantizer.enabled:
        raise PTQError(f"{run_dir} is a float run (quantizer={cfg.quantizer.name}); valid: a quantized run")
    if not (run_dir / PARAMS_FILE).is_file():
        raise PTQError(f"{run_dir} holds no {PARAMS_FILE} (saved quantizer parameters); valid: a quantized run "
                       f"folder written by run.py")
    recorded = res.get("deployability") or {}
    if recorded.get("deployable") is False:   # as the run recorded it: refused before anything is rebuilt
        raise PTQError(f"{run_dir}: {refusal(recorded)}")
    cfg.quantizer.load = None
    pcfg = resolve_ptq_config(cfg)
    changed = [s for s in pcfg.recipe if s in TRANSFORMING_STAGES]
    if changed and not (run_dir / WEIGHTS_FILE).is_file():
        raise PTQError(f"{run_dir}: recipe stage {changed[0]} changed the float weights, and the run folder holds no "
                       f"{WEIGHTS_FILE} (written by runs since the export of changed weights); valid: rerun it")
    model = build_model(cfg.model, "cpu")
    wrap_model(model, pcfg)
    if changed:
        match_folded_layouts(model, run_dir / PARAMS_FILE)
    load_quant_params(model, run_dir / PARAMS_FILE)
    if changed:
        load_model_weights(model, run_dir / WEIGHTS_FILE)
    return cfg, model


def export_run(run_dir: Path, out: Path | None = None) -> tuple[Path, object, torch.nn.Module, torch.nn.Module]:
    """Write the ONNX graph of a run; returns (its path, config, simulated model, export-form model)."""
    import copy

    from ptq.export.onnx_graph import export_modules, write_onnx

    cfg, model = rebuild_run(run_dir)
    exported = export_modules(copy.deepcopy(model))
    shape = [1, *model.default_cfg.get("input_size", (3, 224, 224))] if hasattr(model, "default_cfg") else None
    example = torch.zeros(shape)
    path = write_onnx(exported, example, out or run_dir / ONNX_FILE)
    return path, cfg, model, exported


def parity(path: Path, cfg, model: torch.nn.Module, max_test: int | None = None, threads: int = 1) -> dict:
    """The ONNX graph in ONNX Runtime against the simulated and the float model on the run's test images."""
    from ptq.data import build_data
    from ptq.export.runtime import FLOAT_KERNELS, INTEGER_KERNELS, kernel_counts, run_logits, session
    from ptq.quant import set_quant_enabled
    from ptq.quant.modules import QMatMul
    from ptq.quant.wrap import quant_ops

    if max_test is not None:
        cfg.data.max_test = max_test
    data = build_data(cfg, model)
    images, labels = zip(*data.test_batches(int(cfg.eval.batch_size)))
    x, y = torch.cat(images), torch.cat(labels)
    with torch.no_grad():
        sim = torch.cat([model(b) for b in x.split(256)])
        set_quant_enabled(model, False)
        flt = torch.cat([model(b) for b in x.split(256)])
        set_quant_enabled(model, True)
    ort_logits = torch.from_numpy(run_logits(session(path, threads), x.numpy().astype(np.float32)))
    counts = kernel_counts(path)
    ops = quant_ops(model)
    return {"onnx": str(path), "num_test": len(y),
            "top1_onnx": 100.0 * (ort_logits.argmax(-1) == y).float().mean().item(),
            "top1_simulated": 100.0 * (sim.argmax(-1) == y).float().mean().item(),
            "top1_fp32": 100.0 * (flt.argmax(-1) == y).float().mean().item(),
            "agreement_simulated": 100.0 * (ort_logits.argmax(-1) == sim.argmax(-1)).float().mean().item(),
            "agreement_fp32": 100.0 * (ort_logits.argmax(-1) == flt.argmax(-1)).float().mean().item(),
            "max_abs_logit_diff": (ort_logits - sim).abs().max().item(),
            "integer_kernels": {k: counts[k] for k in INTEGER_KERNELS if counts[k]},
            "float_kernels": {k: counts[k] for k in FLOAT_KERNELS if counts[k]},
            "quantized_linears": sum(type(op).__name__ == "QLinear" for op in ops.values()),
            "quantized_matmuls": sum(isinstance(op, QMatMul) for op in ops.values())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ptq.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None, help=f"the ONNX file (default RUN_DIR/{ONNX_FILE})")
    p.add_argument("--parity", action="store_true", help=f"run it in ONNX Runtime (writes RUN_DIR/{PARITY_FILE})")
    p.add_argument("--max-test", type=int, default=None, help="parity on the first N test images only")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if args.max_test is not None and args.max_test < 1:
            raise PTQError(f"--max-test={args.max_test} is impossible; valid: an integer >= 1")
        path, cfg, model, _ = export_run(args.run_dir, args.out)
        print(f"wrote {path}")
        if args.parity:
            rep = parity(path, cfg, model, args.max_test, args.threads)
            (args.run_dir / PARITY_FILE).write_text(json.dumps(rep, indent=2) + "\n")
            print(json.dumps(rep, indent=2))
    except PTQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
