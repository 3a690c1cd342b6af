"""Reconstruction speed, the code before issue 23 against the current one, side by side on the same CPU (issue 23).

    PYTHONPATH=$PWD python experiments/speed/benchmark_recon.py [--old-rev 546eb90] [--rounds 2] [--iters 60]
        [--stage | --calib] [--methods ptq4vit] [--threads 2] [--variants eager compile bf16 compile_bf16]
        [--seeds 0 1 2] [--cold-cache] [--tag NAME]

The old code is `git archive <old-rev> ptq conf` in a temporary folder.
- `unit` (default): one process holds both codes (each `ptq` module set swapped into sys.modules around its calls)
  and two copies of fmnist_vit W4A4 calibrated with the method, one by each code; then `reconstruct_unit` on
  blocks.1 with the BRECQ defaults (batch 32, quantized inputs, regularizer after 20 % warm-up) runs --chunk steps
  at a time, the old code and each --variants form of the current one (VARIANTS: recon.compile /
  recon.precision) alternating, --rounds times each: milliseconds per iteration (the whole loop; eval_images 32),
  so that the load of the shared machine falls on all alike (round 0, which compiles, is timed apart:
  `first_turn_s`); then a hash of each one's hardened rounding and learned steps after --iters steps from the same
  start; `floor_bf16`: not a reconstruction but its floor, the float block's forward + backward, compiled, bf16;
- `--calib`: the same process set-up, the method's calibration alone (its searches) by each code, alternating;
- `--stage`: worker processes, old and each variant back to back, per --seeds: the whole `reconstruct` stage at
  the defaults (6 units x 300 steps, 1024 images) after the method's calibration, its seconds (compiles
  included; --cold-cache: from an empty inductor cache), top-1 / agreement / KL to float on the first --max-test
  test images, and a hash of every quantizer's saved parameters; plus the calibration seconds.
Equal hashes = bit-identical results. Writes experiments/speed/benchmark_recon.{json,md} (rows accumulate).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent
ROOT = OUT.parents[1]


def params_hash(model) -> str:
    from ptq.quant.params import quant_state

    tensors, _ = quant_state(model)
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].numpy().tobytes())
    return h.hexdigest()[:16]


def worker(mode: str, method: str, iters: int, max_test: int, variant: str = "eager", seed: int = 3) -> dict:
    import torch

    from ptq.cli import compose_config
    from ptq.data import build_data
    from ptq.evaluate import agreement, evaluate_logits, kl_to_reference, top1
    from ptq.models import build_model
    from ptq.quant import quantize_model, resolve_ptq_config
    from ptq.quant.wrap import set_quant_enabled
    from ptq.recon import stage
    from ptq.recon.stage import capture_unit, reconstruct_unit
    from ptq.recon.units import find_units

    options = [f"recon.{k}={str(v).lower()}" for k, v in VARIANTS[variant].items()]
    cfg = compose_config(["model=fmnist_vit", f"quantizer={method}", "bits=w4a4", "logger=none",
                          f"data.max_test={max_test}", "recon=brecq", f"calib.seed={seed}", *options])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    data = build_data(cfg, model)
    pcfg = resolve_ptq_config(cfg)
    if mode == "stage":
        fp_logits, labels = evaluate_logits(model, data.test_batches(256), "cpu", False)
        t0 = time.perf_counter()
        report = quantize_model(model, pcfg, data.calib_images, data.calib_labels, progress=False,
                                recon_data=(data.recon_images, data.recon_labels))
        total = time.perf_counter() - t0
        rec = report.reconstruction
        logits, _ = evaluate_logits(model, data.test_batches(256), "cpu", False)
        blocks = [u for u in rec["units"] if u["unit"].startswith("blocks.")]
        return {"calib_s": round(total - rec["seconds"], 2), "recon_s": rec["seconds"],
                "s_per_block": round(sum(u["seconds"] for u in blocks) / len(blocks), 2),
                "top1": round(top1(logits, labels), 2), "agreement": round(agreement(logits, fp_logits), 2),
                "kl_fp32": round(kl_to_reference(logits, fp_logits), 5), "hash": params_hash(model)}
    quantize_model(model, dataclasses.replace(pcfg, recon=dataclasses.replace(pcfg.recon, name="none")),
                   data.calib_images, data.calib_labels, progress=False)
    x = data.recon_images
    set_quant_enabled(model, False)
    unit = dict(find_units(model, "block", x[:1]))["blocks.1"]
    fp_in, target, _ = capture_unit(model, unit, x, 64)
    set_quant_enabled(model, True)
    q_in, _, _ = capture_unit(model, unit, x, 64)
    rc = dataclasses.replace(pcfg.recon, iters=iters, eval_images=32)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    row = reconstruct_unit("blocks.1", unit, rc, fp_in, q_in, target, *mse_args(stage, rc), g, False)
    dt = time.perf_counter() - t0
    return {"ms_per_iter": round(1e3 * dt / iters, 2), "mse_after": row["mse_after"], "hash": params_hash(model)}


def mse_args(stage, rc) -> tuple:
    """The loss arguments of `stage.reconstruct_unit` for plain output MSE, in that code version's signature: a
    criterion (the loss registry, ptq/recon/losses/) or the older (weight, kl) pair."""
    if "criterion" in inspect.signature(stage.reconstruct_unit).parameters:
        return (lambda out, target, idx: stage.output_loss(out, target, None, False, rc.rec_scale),)
    return (None, False)


def _ptq_modules() -> dict:
    return {k: v for k, v in sys.modules.items() if k == "ptq" or k.startswith("ptq.")}


def _load_code(path: str) -> dict:
    """Import the `ptq` of `path` (and what a unit benchmark calls) into a fresh module set; returns that set."""
    for k in _ptq_modules():
        del sys.modules[k]
    spec = importlib.machinery.PathFinder.find_spec("ptq", [path])   # that tree's package, sys.path untouched
    package = importlib.util.module_from_spec(spec)
    sys.modules["ptq"] = package
    spec.loader.exec_module(package)   # its submodules resolve through package.__path__, inside `path`
    import ptq.cli  # noqa: F401
    import ptq.data  # noqa: F401
    import ptq.models  # noqa: F401
    import ptq.quant  # noqa: F401
    import ptq.quant.params  # noqa: F401
    import ptq.quant.wrap  # noqa: F401
    import ptq.recon.stage  # noqa: F401
    import ptq.recon.units  # noqa: F401
    import ptq.schema  # noqa: F401
    mods = _ptq_modules()
    for k in mods:
        del sys.modules[k]
    return mods


class Code:
    """One version of the code: its module set, swapped into sys.modules while it runs (lazy imports resolve)."""

    def __init__(self, name: str, path: str):
        self.name, self.mods = name, _load_code(path)

    def __enter__(self):
        for k in _ptq_modules():
            del sys.modules[k]
        sys.modules.update(self.mods)
        self.mods["ptq.schema"].register()      # Hydra's ConfigStore is shared: this code's schema composes
        return self.mods

    def __exit__(self, *exc):
        for k in self.mods:
            sys.modules.pop(k, None)


VARIANTS = {"eager": {}, "compile": {"compile": True}, "bf16": {"precision": "bfloat16"},
            "compile_bf16": {"compile": True, "precision": "bfloat16"}, "floor_bf16": None}
# floor_bf16 (unit mode only): not a reconstruction but its floor, the same block's forward + backward with every
# quantizer off (the weights' gradients: what the rounding's are made of), compiled, matmuls in bf16
_FLOOR = {}


def float_floor_turn(m: dict, unit, q_in: list, target, rc, steps: int, seed: int) -> None:
    """`steps` forward + backward passes of the float `unit` (a scratch copy) on random batches of q_in, compiled
    (one compiled function per process), bf16 autocast, the output MSE as the loss."""
    import torch

    if "fn" not in _FLOOR:
        def fwd_bwd(u, x, y):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = u(x)
            m["ptq.recon.stage"].output_loss(out.float(), y, None, False, rc.rec_scale).backward()
        _FLOOR["fn"] = torch.compile(fwd_bwd, dynamic=False)
    m["ptq.quant.wrap"].set_quant_enabled(unit, False)
    weights = [p for n, p in unit.named_parameters() if n.endswith("weight") and p.ndim == 2]
    for w in weights:
        w.requires_grad_(True)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(len(target), generator=g)[:rc.batch_size]
        for w in weights:
            w.grad = None
        with torch.enable_grad():
            _FLOOR["fn"](unit, q_in[0][idx], target[idx])


def unit_side_by_side(codes: list[Code], method: str, iters: int, chunk: int, rounds: int,
                      variants: list[str], threads: int) -> list[dict]:
    """The old code (codes[0]) and each variant of the current one (codes[-1] with the recon options of
    VARIANTS), alternating every `chunk` steps; round 0 (warm-up: the compile of a compiled variant) is timed
    apart. The set-up (calibration, captures) runs on 1 thread, the timed turns on `threads`."""
    import copy

    import torch

    torch.set_num_threads(1)
    setups = {}
    for code in codes:
        with code as m:
            cfg = m["ptq.cli"].compose_config(["model=fmnist_vit", f"quantizer={method}", "bits=w4a4",
                                               "logger=none", "data.max_test=16", "recon=brecq"])
            torch.manual_seed(0)
            model = m["ptq.models"].build_model(cfg.model)
            data = m["ptq.data"].build_data(cfg, model)
            pcfg = m["ptq.quant"].resolve_ptq_config(cfg)
            m["ptq.quant"].quantize_model(model, dataclasses.replace(pcfg, recon=dataclasses.replace(
                pcfg.recon, name="none")), data.calib_images, data.calib_labels, progress=False)
            x = data.recon_images
            m["ptq.quant.wrap"].set_quant_enabled(model, False)
            unit = dict(m["ptq.recon.units"].find_units(model, "block", x[:1]))["blocks.1"]
            fp_in, target, _ = m["ptq.recon.stage"].capture_unit(model, unit, x, 64)
            m["ptq.quant.wrap"].set_quant_enabled(model, True)
            q_in, _, _ = m["ptq.recon.stage"].capture_unit(model, unit, x, 64)
            setups[code.name] = (model, unit, pcfg.recon, fp_in, q_in, target)
    torch.set_num_threads(threads)
    runs = [(codes[0].name, codes[0], {})] + [
        (codes[-1].name if v == "eager" else f"{codes[-1].name}+{v}", codes[-1], VARIANTS[v]) for v in variants]
    times: dict[str, list[float]] = {label: [] for label, *_ in runs}
    first: dict[str, float] = {}
    for r in range(rounds + 1):                       # round 0: warm-up, not counted
        for label, code, options in runs:
            model, unit, rc, fp_in, q_in, target = setups[code.name]
            scratch = copy.deepcopy(unit)
            with code as m:
                t0 = time.perf_counter()
                if options is None:
                    float_floor_turn(m, scratch, q_in, target, rc, chunk, r)
                else:
                    rcc = dataclasses.replace(rc, iters=chunk, eval_images=32, **options)
                    m["ptq.recon.stage"].reconstruct_unit("blocks.1", scratch, rcc, fp_in, q_in, target,
                                                          *mse_args(m["ptq.recon.stage"], rcc),
                                                          torch.Generator().manual_seed(r), False)
                dt = time.perf_counter() - t0
                if r:
                    times[label].append(1e3 * dt / chunk)
                else:
                    first[label] = dt
    rows = []
    for label, code, options in runs:
        t = sorted(times[label])
        row = {"mode": "unit", "method": method, "code": label, "iters": iters, "chunk": chunk, "rounds": rounds,
               "ms_per_iter": round(statistics.median(t), 2), "ms_min": round(t[0], 2),
               "first_turn_s": round(first[label], 2)}
        rows.append(row)
        if options is None:          # the floor: nothing reconstructed
            continue
        model, unit, rc, fp_in, q_in, target = setups[code.name]
        scratch = copy.deepcopy(unit)    # the hash run: every variant from the same start
        with code as m:
            res = m["ptq.recon.stage"].reconstruct_unit(
                "blocks.1", scratch, dataclasses.replace(rc, iters=iters, **options), fp_in, q_in, target,
                *mse_args(m["ptq.recon.stage"], rc), torch.Generator().manual_seed(0), False)
            row.update(mse_after=res["mse_after"], hash=scratch_hash(model, unit, scratch))
    for row in rows[1:]:
        row["speedup"] = round(rows[0]["ms_per_iter"] / row["ms_per_iter"], 2)
    return rows


def calib_side_by_side(codes: list[Code], method: str, rounds: int) -> list[dict]:
    """The method's calibration (its searches; no reconstruction) of fmnist_vit W4A4 by each code, alternating,
    `rounds` times each: seconds (median) and the hash of the calibrated parameters."""
    import torch

    times: dict[str, list[float]] = {c.name: [] for c in codes}
    hashes: dict[str, str] = {}
    for _ in range(rounds):
        for code in codes:
            with code as m:
                cfg = m["ptq.cli"].compose_config(["model=fmnist_vit", f"quantizer={method}", "bits=w4a4",
                                                   "logger=none", "data.max_test=16"])
                torch.manual_seed(0)
                model = m["ptq.models"].build_model(cfg.model)
                data = m["ptq.data"].build_data(cfg, model)
                pcfg = m["ptq.quant"].resolve_ptq_config(cfg)
                t0 = time.perf_counter()
                m["ptq.quant"].quantize_model(model, pcfg, data.calib_images, data.calib_labels, progress=False)
                times[code.name].append(time.perf_counter() - t0)
                hashes[code.name] = params_hash(model)
    rows = []
    for code in codes:
        t = sorted(times[code.name])
        rows.append({"mode": "calib", "method": method, "code": code.name, "rounds": rounds,
                     "calib_s": round(statistics.median(t), 2), "calib_min_s": round(t[0], 2),
                     "hash": hashes[code.name]})
    rows[-1]["speedup"] = round(rows[0]["calib_s"] / rows[-1]["calib_s"], 2)
    return rows


def scratch_hash(model, unit, scratch) -> str:
    """params_hash of `model` with `scratch` (a reconstructed copy of its `unit`) in the unit's place."""
    parent, _, leaf = next(n for n, mod in model.named_modules() if mod is unit).rpartition(".")
    holder = model.get_submodule(parent) if parent else model
    setattr(holder, leaf, scratch)
    try:
        return params_hash(model)
    finally:
        setattr(holder, leaf, unit)


def run_worker(path: str, mode: str, method: str, iters: int, threads: int, max_test: int, variant: str = "eager",
               seed: int = 3, cache_dir: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(threads)}
    if cache_dir:      # the compile caches of torch.compile (inductor's and its FX graph cache) in this folder
        env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    load0 = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--worker", mode, "--methods", method, "--iters", str(iters),
           "--threads", str(threads), "--max-test", str(max_test), "--variants", variant, "--seeds", str(seed)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return {**res, "load": f"{load0:.1f}/{os.getloadavg()[0]:.1f}"}


# what a tagged section's rows say, printed under its heading
NOTES = {"compiled step + FusedAdam": (
    "The compiled step with its optimizer step by `ptq.recon.step.FusedAdam` (torch's fused Adam kernel without "
    "torch.optim's per-step Python; the compile + bf16 hash equals the untagged section's: no bit changed) and "
    "`floor_bf16`, the float block's own forward + backward (compiled, bf16, no quantizer): the speed-up no "
    "quantizer work can pass. The calibration and whole-stage rows of the untagged section stand for this code "
    "(the search code is untouched; the step computes the same bits). Load 11-14: other agents' jobs held the 2 "
    "cores, so the absolute times are several times an idle machine's; the ratios are of turns interleaved in one "
    "process. The same run at --threads 2 did not finish in the session (40 minutes at load 11-15) and is pending.")}


def table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows])


def write(rows: list[dict], argv: str) -> str:
    path = OUT / "benchmark_recon.json"
    old = json.loads(path.read_text()) if path.is_file() else []
    key = ("mode", "method", "threads", "cache", "seed", "tag")
    keep = [r for r in old if tuple(r.get(k) for k in key) not in {tuple(x.get(k) for k in key) for x in rows}]
    allrows = keep + [{**r, "argv": r.get("argv", argv)} for r in rows]
    path.write_text(json.dumps(allrows, indent=1) + "\n")
    commands = list(dict.fromkeys(r["argv"] for r in allrows if "argv" in r))
    md = ["# Reconstruction speed: before issue 23 (546eb90) and now, side by side", "",
          "`PYTHONPATH=$PWD python experiments/speed/benchmark_recon.py ARGS` (rows accumulate over runs), ARGS:", "",
          *[f"- `{c}`" for c in commands], "",
          "fmnist_vit W4A4 (threads: the column); `--stage`: old and new worker processes interleaved "
          "(round = one old and one new "
          "run, back to back). `hash`: the hardened rounding, learned steps and every other saved quantizer "
          "parameter; equal = bit-identical. `load`: 1-minute load average before / after the worker (other jobs "
          "share the 2 cores).", ""]
    for tag in dict.fromkeys(r.get("tag") for r in allrows):     # rows without a tag first, then each --tag
        of = [r for r in allrows if r.get("tag") == tag]
        unit, calib, stage = ([r for r in of if r["mode"] == mode] for mode in ("unit", "calib", "stage"))
        head = f" ({tag})" if tag else ""
        if tag in NOTES:
            md += [f"## {tag}", "", NOTES[tag], ""]
        if unit:
            md += ["## One block (blocks.1), the reconstruction loop, BRECQ defaults" + head, "",
                   "One process, old and new alternating every `chunk` steps, `rounds` turns each: `ms_per_iter` the "
                   "median turn, `ms_min` the fastest; `hash` after `iters` steps of each from the same start.", "",
                   table(unit, ["method", "code", "threads", "chunk", "rounds", "ms_per_iter", "ms_min", "speedup",
                                "first_turn_s", "iters", "mse_after", "hash", "load"]), ""]
        if calib:
            md += ["## The method's calibration (its searches), no reconstruction" + head, "",
                   "One process, old and new alternating, `rounds` turns each: `calib_s` the median, `hash` of the "
                   "calibrated parameters.", "",
                   table(calib, ["method", "code", "threads", "rounds", "calib_s", "calib_min_s", "speedup", "hash",
                                 "load"]), ""]
        if stage:
            md += ["## The whole reconstruct stage (6 units x 300 steps) after calibration" + head, "",
                   table(stage, ["method", "seed", "round", "code", "threads", "cache", "calib_s", "recon_s",
                                 "s_per_block", "speedup", "top1", "agreement", "kl_fp32", "hash", "load"]), ""]
    text = "\n".join(md)
    path.with_suffix(".md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-rev", default="546eb90")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iters", type=int, default=60, help="unit: steps of the hash run")
    ap.add_argument("--chunk", type=int, default=10, help="unit: steps per timed old / new turn")
    ap.add_argument("--stage", action="store_true", help="the whole reconstruct stage instead of one block")
    ap.add_argument("--calib", action="store_true", help="the method's calibration (its searches) instead")
    ap.add_argument("--methods", nargs="+", default=["ptq4vit"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["eager"], choices=list(VARIANTS),
                    help="unit: the current code's step forms timed against the old code (recon.compile, "
                         "recon.precision)")
    ap.add_argument("--max-test", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3],
                    help="stage: calib.seed values (the calibration and reconstruction images, the step draws)")
    ap.add_argument("--cold-cache", action="store_true", help="stage: each worker compiles from an empty cache")
    ap.add_argument("--tag", help="rows of this run under their own headings (kept beside the untagged ones)")
    ap.add_argument("--worker", choices=["unit", "stage"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(worker(args.worker, args.methods[0], args.iters, args.max_test, args.variants[0],
                                args.seeds[0])))
        return
    mode = "stage" if args.stage else "calib" if args.calib else "unit"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.old_rev, "ptq", "conf"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        if mode in ("unit", "calib"):
            import torch

            torch.set_num_threads(args.threads)
            load0 = os.getloadavg()[0]
            codes = [Code(args.old_rev, tmp), Code("current", str(ROOT))]
            for method in args.methods:
                rows_of = calib_side_by_side(codes, method, args.rounds) if mode == "calib" else \
                    unit_side_by_side(codes, method, args.iters, args.chunk, args.rounds, args.variants, args.threads)
                for row in rows_of:
                    rows.append({**row, "threads": args.threads, "load": f"{load0:.1f}/{os.getloadavg()[0]:.1f}",
                                 **({"tag": args.tag} if args.tag else {})})
                    print(json.dumps(rows[-1]), flush=True)
            print(write(rows, " ".join(sys.argv[1:])))
            return
        for method in args.methods:
            for seed in args.seeds:
                for r in range(1, args.rounds + 1):
                    runs = [(args.old_rev, tmp, "eager")] + [
                        ("current" if v == "eager" else f"current+{v}", str(ROOT), v) for v in args.variants]
                    base = None
                    for code, path, variant in runs:
                        cache = tempfile.mkdtemp(dir=tmp) if args.cold_cache else None
                        res = run_worker(path, mode, method, args.iters, args.threads, args.max_test, variant, seed,
                                         cache)
                        rows.append({"mode": mode, "method": method, "seed": seed, "round": r, "code": code,
                                     "threads": args.threads, "cache": "cold" if args.cold_cache else "warm",
                                     "iters": 300, **res, **({"tag": args.tag} if args.tag else {})})
                        if base is None:
                            base = res
                        else:
                            rows[-1]["speedup"] = round(base["recon_s"] / res["recon_s"], 2)
                        print(json.dumps(rows[-1]), flush=True)
                        write(rows, " ".join(sys.argv[1:]))
    print(write(rows, " ".join(sys.argv[1:])))


if __name__ == "__main__":
    main()
