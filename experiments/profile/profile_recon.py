"""Where the time of one reconstruction iteration and of one search call goes, on CPU (issue 23 item 1).

    PYTHONPATH=$PWD python experiments/profile/profile_recon.py [--iters 40] [--threads 2] [--label current]

Test-bed: fmnist_vit, W4A4, PTQ4ViT calibrated as run.py does (32 images, calib.seed 3), BRECQ defaults (batch 32,
quantized inputs, regularizer on: the step is taken at the middle of the 300-step schedule, b = 11), unit blocks.1.
One iteration is split with wall-clock timers into: batch gather (random indices, the unit's inputs and targets),
forward (of it: the activation fake-quantizers and the weights' soft rounding, timed inside the stand-ins), loss,
rounding regularizer (what is left of it after the forward), backward (zero_grad + loss.backward) and the Adam step;
the backward is further split with torch.profiler by autograd node (matmuls, LayerNorm / GELU / softmax, the
fake-quantize and soft-rounding nodes, the rest). The search part times PTQ4ViT's search of blocks.1.mlp.fc1 (both
operands, its captured calibration data, the Hessian metric) split into candidate fake-quantize, candidate matmuls,
metric and the rest. Only functions that exist before and after issue 23 are called, so the same script profiles
the earlier code: `PYTHONPATH=<tree of 546eb90> python experiments/profile/profile_recon.py --label 546eb90`.
Writes experiments/profile/profile_cpu.{json,md} (one column per --label, the 1-minute load average with it:
other jobs share the 2 cores, so the absolute times are upper bounds; compare labels measured at similar load).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ptq.cli import compose_config
from ptq.data import build_data
from ptq.metrics import get_metric
from ptq.models import build_model
from ptq.quant import quant_ops, quantize_model, resolve_ptq_config
from ptq.quant.wrap import set_quant_enabled
from ptq.recon import learnable
from ptq.recon.adaround import annealed_b
from ptq.recon.stage import _train_inputs, capture_unit, output_loss
from ptq.recon.units import find_units

OUT = Path(__file__).resolve().parent
UNIT, LAYER = "blocks.1", "blocks.1.mlp.fc1"


class Timers:
    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)

    def wrap(self, key: str, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.total[key] += time.perf_counter() - t0
            return out
        return timed


def calibrated(method: str):
    cfg = compose_config(["model=fmnist_vit", f"quantizer={method}", "bits=w4a4", "logger=none", "data.max_test=16",
                          "recon=brecq"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    data = build_data(cfg, model)
    pcfg = resolve_ptq_config(cfg)
    return cfg, model, data, pcfg


def backward_category(name: str) -> str | None:
    if not name.startswith("autograd::engine::evaluate_function: "):
        return None
    node = name.split(": ", 1)[1]
    if node.startswith(("Mm", "Addmm", "Bmm", "Linear", "Matmul")):
        return "backward: matmuls"
    if node.startswith(("NativeLayerNorm", "Gelu", "Softmax")):
        return "backward: LayerNorm / GELU / softmax"
    if node.startswith(("_SteFake", "_SoftRound")):
        return "backward: fused fake-quantize / soft-rounding nodes"
    if node.startswith("AccumulateGrad"):
        return "backward: gradient accumulation"
    return "backward: other nodes (plain fake-quantize arithmetic, views, residual adds)"


def profile_iteration(method: str, iters: int) -> dict[str, float]:
    cfg, model, data, pcfg = calibrated(method)
    quantize_model(model, dataclasses.replace(pcfg, recon=dataclasses.replace(pcfg.recon, name="none")),
                   data.calib_images, data.calib_labels, progress=False)
    rc = pcfg.recon
    x = data.recon_images
    set_quant_enabled(model, False)
    unit = dict(find_units(model, rc.unit, x[:1]))[UNIT]
    fp_in, target, _ = capture_unit(model, unit, x, 64)
    set_quant_enabled(model, True)
    q_in, _, _ = capture_unit(model, unit, x, 64)
    inst = learnable.install(unit, rc.learn_rounding, rc.learn_step, rc.drop_prob)
    rounding, steps = inst.rounding(), inst.steps()
    opt = torch.optim.Adam([{"params": [m.alpha for m in rounding], "lr": rc.lr_rounding},
                            {"params": steps, "lr": rc.lr_step}])
    timers = Timers()
    for *_, m in inst.swaps:
        key = "  forward: soft rounding of the weights" if isinstance(m, learnable.LearnedRounding) else \
            "  forward: activation fake-quantize"
        m.forward = timers.wrap(key, m.forward)
    inst.train(True)
    g = torch.Generator().manual_seed(0)
    t_mid = rc.iters // 2
    b = annealed_b(t_mid, rc.iters, rc.warmup, rc.b_start, rc.b_end)

    def one(tm: Timers) -> None:
        t0 = time.perf_counter()
        idx = torch.randperm(len(target), generator=g)[:rc.batch_size]
        inputs, tgt = _train_inputs(rc, fp_in, q_in, idx), target[idx]
        t1 = time.perf_counter()
        if hasattr(inst, "set_exponent"):
            inst.set_exponent(b)
        with torch.enable_grad():
            out = unit(*inputs)
            t2 = time.perf_counter()
            rec = output_loss(out, tgt, None, False, rc.rec_scale)
            t3 = time.perf_counter()
            loss = rec + rc.reg_lambda * sum(m.regularizer(b) for m in rounding)
            t4 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
        t5 = time.perf_counter()
        opt.step()
        rec.item()
        t6 = time.perf_counter()
        for k, dt in (("batch gather", t1 - t0), ("forward", t2 - t1), ("loss", t3 - t2),
                      ("rounding regularizer (outside the forward)", t4 - t3), ("backward", t5 - t4),
                      ("optimizer step", t6 - t5), ("iteration", t6 - t0)):
            tm.total[k] += dt

    for _ in range(5):
        one(Timers())
    timers.total.clear()
    for _ in range(iters):
        one(timers)
    row = {k: 1e3 * v / iters for k, v in timers.total.items()}
    cats: dict[str, float] = defaultdict(float)
    n_prof = max(5, iters // 4)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n_prof):
            one(Timers())
    for ev in prof.key_averages():
        c = backward_category(ev.key)
        if c:
            cats[c] += ev.cpu_time_total / 1e3 / n_prof
    scale = row["backward"] / max(sum(cats.values()), 1e-9)       # profiler overhead: share of the timed backward
    row.update({f"  {k}": v * scale for k, v in cats.items()})
    inst.train(False)
    inst.finish(harden=False)
    row["float block forward + backward (the floor)"] = float_floor(model, unit, q_in[0], target, rc, iters, g)
    return row


def float_floor(model, unit, x, target, rc, iters: int, g: torch.Generator, precision: str | None = None) -> float:
    """ms of the same block's forward + backward with its quantizers off and the gradients reconstruction needs
    (the linear weights, every op input): what no fake-quantize speed-up can go below. precision: that pass
    compiled (torch.compile), its matmuls under autocast to bfloat16 or not (float32), as the compiled step."""
    from ptq.recon.step import autocast

    def fwd_bwd(u, xb, tb):
        with autocast(precision or "float32", tb.device):
            out = u(xb)
        output_loss(out.float(), tb, None, False, rc.rec_scale).backward()

    step = torch.compile(fwd_bwd, dynamic=False) if precision else fwd_bwd
    set_quant_enabled(model, False)
    weights = [op.weight for op in quant_ops(unit).values() if hasattr(op, "weight")]
    for w in weights:
        w.requires_grad_(True)
    total = 0.0
    try:
        for i in range(iters + 5):
            idx = torch.randperm(len(target), generator=g)[:rc.batch_size]
            xb, tb = x[idx], target[idx]
            t0 = time.perf_counter()
            for w in weights:
                w.grad = None
            with torch.enable_grad():
                step(unit, xb, tb)
            total += (time.perf_counter() - t0) if i >= 5 else 0.0
    finally:
        for w in weights:
            w.requires_grad_(False)
            w.grad = None
        set_quant_enabled(model, True)
    return 1e3 * total / iters


def profile_search(method: str, repeats: int) -> dict[str, float]:
    """One search call (search_op of LAYER) on its captured data, split by wrapped functions."""
    import ptq.quant.recipe as recipe

    cfg, model, data, pcfg = calibrated(method)
    kept = {}
    real = recipe.search_op

    def keep(name, op, cap, metric, pc):
        if name == LAYER:
            kept.update(op=copy.deepcopy(op), cap={k: v.clone() for k, v in cap.items()}, pcfg=pc)
        return real(name, op, cap, metric, pc)

    recipe.search_op = keep
    try:
        quantize_model(model, dataclasses.replace(pcfg, recon=dataclasses.replace(pcfg.recon, name="none")),
                       data.calib_images, data.calib_labels, progress=False)
    finally:
        recipe.search_op = real
    metric = get_metric(pcfg.metric)
    timers = Timers()
    total = 0.0
    for r in range(repeats + 1):
        op = copy.deepcopy(kept["op"])
        tm = timers if r else Timers()
        for q in op.quantizers().values():
            q.fake = tm.wrap("  candidate fake-quantize", q.fake)
        op.candidate_outputs = tm.wrap("  candidate outputs (incl. their fake-quantize)", op.candidate_outputs)
        t0 = time.perf_counter()
        real(LAYER, op, kept["cap"], tm.wrap("  metric", metric), kept["pcfg"])
        if r:
            total += time.perf_counter() - t0
    row = {k: 1e3 * v / repeats for k, v in timers.total.items()}
    inner = row.pop("  candidate outputs (incl. their fake-quantize)", 0.0)
    row["  candidate matmuls (outputs minus fake-quantize)"] = inner - row.get("  candidate fake-quantize", 0.0)
    row["search call"] = 1e3 * total / repeats
    row["  rest (partners, scores, argmax)"] = row["search call"] - inner - row.get("  metric", 0.0)
    return row


COMPILED_ORDER = ["iteration", "  matmuls (aten mm / addmm / bmm)",
                  "  fused kernels (inductor: fake-quantize, LayerNorm, GELU, softmax, their backward)",
                  "  optimizer (fused Adam)", "  compiled-graph guards and calls",
                  "  batch gather", "  rest (autograd engine, Python)"]
FLOOR = "float block forward + backward, compiled, same precision (the floor)"


def profile_compiled(method: str, iters: int, precision: str) -> dict[str, float]:
    """The reconstruct_unit loop with recon.compile=true (and `precision`) on UNIT, after one warm-up run that
    compiles: wall-clock ms per iteration, split by torch.profiler's self times (scaled to the timed loop)."""
    import torch._inductor.config as inductor_config

    from ptq.recon.stage import reconstruct_unit

    inductor_config.cpp.enable_kernel_profile = True     # each fused C++ kernel a profiler event
    cfg, model, data, pcfg = calibrated(method)
    quantize_model(model, dataclasses.replace(pcfg, recon=dataclasses.replace(pcfg.recon, name="none")),
                   data.calib_images, data.calib_labels, progress=False)
    x = data.recon_images
    set_quant_enabled(model, False)
    unit = dict(find_units(model, pcfg.recon.unit, x[:1]))[UNIT]
    fp_in, target, _ = capture_unit(model, unit, x, 64)
    set_quant_enabled(model, True)
    q_in, _, _ = capture_unit(model, unit, x, 64)
    rc = dataclasses.replace(pcfg.recon, iters=iters, eval_images=32, warmup=0.0, compile=True, precision=precision)

    def run() -> float:
        t0 = time.perf_counter()
        reconstruct_unit(UNIT, copy.deepcopy(unit), rc, fp_in, q_in, target,
                         lambda o, t, i: output_loss(o, t, None, False, rc.rec_scale), torch.Generator().manual_seed(0),
                         False)
        return 1e3 * (time.perf_counter() - t0) / iters

    run()                                     # compiles (both graphs: warmup=0 uses only the regularized one)
    row = {"iteration": run()}
    row[FLOOR] = float_floor(model, unit, q_in[0], target, rc, iters, torch.Generator().manual_seed(0), precision)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    cats: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        k, ms = ev.key, ev.self_cpu_time_total / 1e3 / iters
        if k in ("aten::mm", "aten::addmm", "aten::bmm"):
            cats["  matmuls (aten mm / addmm / bmm)"] += ms
        elif k.startswith("graph_") or k.startswith("## Call CompiledFxGraph"):
            cats[COMPILED_ORDER[2]] += ms
        elif k.startswith(("Optimizer.", "aten::_fused_adam", "aten::_foreach_add")):
            cats["  optimizer (fused Adam)"] += ms
        elif k.startswith(("TorchDynamo", "CompiledFunction", "Torch-Compiled", "Pregraph", "AOTDispatcher")):
            cats["  compiled-graph guards and calls"] += ms
        elif k in ("aten::index", "aten::randperm"):
            cats["  batch gather"] += ms
    scale = row["iteration"] / max(sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3 / iters, 1e-9)
    row.update({k: v * scale for k, v in cats.items()})
    row["  rest (autograd engine, Python)"] = row["iteration"] - sum(row[k] for k in cats)
    return row


ORDER = ["iteration", "batch gather", "forward", "  forward: activation fake-quantize",
         "  forward: soft rounding of the weights", "loss", "rounding regularizer (outside the forward)", "backward",
         "  backward: matmuls", "  backward: LayerNorm / GELU / softmax",
         "  backward: fused fake-quantize / soft-rounding nodes",
         "  backward: other nodes (plain fake-quantize arithmetic, views, residual adds)",
         "  backward: gradient accumulation", "optimizer step", "float block forward + backward (the floor)",
         "search call", "  candidate fake-quantize",
         "  candidate matmuls (outputs minus fake-quantize)", "  metric", "  rest (partners, scores, argmax)"]


def write(columns: dict[str, dict], meta: dict) -> str:
    labels = list(columns)
    lines = ["| part (ms) | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for k in ORDER:
        if any(k in columns[lb]["row"] for lb in labels):
            cells = [f"{columns[lb]['row'][k]:.2f}" if k in columns[lb]["row"] else "" for lb in labels]
            lines.append(f"| {k.strip() if not k.startswith('  ') else '&nbsp;&nbsp;' + k.strip()} | "
                         + " | ".join(cells) + " |")
    lines.append("| load average (1 min, start / end) | "
                 + " | ".join(f"{columns[lb]['load'][0]} / {columns[lb]['load'][1]}" for lb in labels) + " |")
    compiled = meta.get("compiled", {})
    if compiled:
        cl = list(compiled)
        lines += ["", "The compiled step (`recon.compile=true`, issue 23), the same unit and defaults (the regularizer "
                  "on every step), after a warm-up run that compiles; split by torch.profiler self times scaled to the "
                  f"timed loop ({meta.get('compiled_threads', '')} threads):", "",
                  "| part (ms) | " + " | ".join(cl) + " |", "|---|" + "---|" * len(cl)]
        for k in COMPILED_ORDER + [FLOOR]:
            lines.append(f"| {'&nbsp;&nbsp;' + k.strip() if k.startswith('  ') else k} | "
                         + " | ".join(f"{compiled[c]['row'].get(k, 0.0):.2f}" for c in cl) + " |")
        lines.append("| load average (1 min, start / end) | "
                     + " | ".join(f"{compiled[c]['load'][0]} / {compiled[c]['load'][1]}" for c in cl) + " |")
    md = ["# Reconstruction iteration and search call, profiled on CPU", "",
          "`PYTHONPATH=$PWD python experiments/profile/profile_recon.py --label LABEL` (a column per label; "
          f"{meta['threads']} threads, {meta['processor']}, torch {meta['torch']})", "",
          f"fmnist_vit W4A4, PTQ4ViT; iteration: BRECQ defaults on {UNIT} (batch 32, regularizer on), wall-clock ms "
          f"per iteration over {meta['iters']} iterations after 5 warm-up ones; the backward's split by autograd node "
          f"comes from torch.profiler, scaled to the timed backward. Search: one `search_op` of {LAYER} (weight and "
          "input, Hessian metric, the layer's captured calibration data). Other agents' jobs share the 2 cores: the "
          "load average is given per column, absolute times are upper bounds of an idle machine's.", "",
          *lines, ""]
    text = "\n".join(md)
    (OUT / "profile_cpu.md").write_text(text + "\n" + meta.get("notes", ""))
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--search-repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", default="ptq4vit")
    ap.add_argument("--label", default="current")
    ap.add_argument("--compiled", choices=["float32", "bfloat16"],
                    help="profile the compiled step (recon.compile=true) at this recon.precision instead")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = OUT / "profile_cpu.json"
    saved = json.loads(path.read_text()) if path.is_file() else {"meta": {}, "columns": {}}
    load0 = round(os.getloadavg()[0], 1)
    if args.compiled:
        row = profile_compiled(args.method, args.iters, args.compiled)
        saved["meta"].setdefault("compiled", {})[f"{args.label} {args.compiled}"] = {
            "row": row, "load": [load0, round(os.getloadavg()[0], 1)]}
        saved["meta"]["compiled_threads"] = args.threads
        path.write_text(json.dumps(saved, indent=1) + "\n")
        print(write(saved["columns"], saved["meta"]))
        return
    row = profile_iteration(args.method, args.iters)
    row.update(profile_search(args.method, args.search_repeats))
    saved["columns"][args.label] = {"row": row, "load": [load0, round(os.getloadavg()[0], 1)]}
    saved["meta"].update(threads=args.threads, iters=args.iters, torch=torch.__version__,
                         processor=open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": ")
                         if os.path.exists("/proc/cpuinfo") else "")
    path.write_text(json.dumps(saved, indent=1) + "\n")
    print(write(saved["columns"], saved["meta"]))


if __name__ == "__main__":
    main()
