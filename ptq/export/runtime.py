"""Running an exported graph in ONNX Runtime (CPU, all graph optimizations) and checking what it runs as integers."""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

# ONNX Runtime's integer matmul / conv kernels (standard and contrib ops) that a QDQ graph is fused into
INTEGER_KERNELS = ("QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "QLinearConv", "ConvInteger",
                   "QGemm", "DynamicQuantizeMatMul")
FLOAT_KERNELS = ("MatMul", "Gemm", "Conv", "FusedMatMul", "FusedGemm", "FusedConv")


def session(path: str | Path, threads: int = 1, optimized: str | Path | None = None):
    """A CPU InferenceSession with every graph optimization, fixed threads; `optimized`: where ORT writes the
    optimized graph."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def kernel_counts(path: str | Path) -> Counter:
    """Op types of the graph as ONNX Runtime optimizes it (session option optimized_model_filepath)."""
    import onnx

    with tempfile.TemporaryDirectory() as d:
        opt = Path(d) / "optimized.onnx"
        session(path, optimized=opt)
        return Counter(n.op_type for n in onnx.load(str(opt)).graph.node)


def run_logits(sess, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: images[i:i + batch_size]})[0] for i in range(0, len(images), batch_size)]
    return np.concatenate(outs)


def interleaved_medians(sessions: dict, x: np.ndarray, runs: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds of one run of each session on x: `warmup` untimed runs each, then the sessions take turns
    run by run, so that a load change on a shared machine hits all of them alike."""
    import statistics
    import time

    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}
