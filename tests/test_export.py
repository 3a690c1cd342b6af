"""ONNX export (ptq/export/): QDQ arithmetic against hand-built ONNX graphs in ONNX Runtime, integer kernels of a
test-bed export, refusal of non-deployable runs, bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ptq.export.onnx_graph import ActivationQDQ, WeightDQ, write_onnx  # noqa: E402
from ptq.export.runtime import session  # noqa: E402
from ptq.quantizers import QUANTIZERS, Layout  # noqa: E402


def _quantizer(kind: str, bits: int, layout: Layout, scale: torch.Tensor, zp: torch.Tensor | None = None):
    q = QUANTIZERS[kind](bits, layout)
    q.set_param(scale)
    if zp is not None:
        q.zero_point.copy_(zp)
    q.enabled = True
    return q


def _inputs(scale: float, shape=(4, 6, 8), seed: int = 0) -> torch.Tensor:
    """Random values, exact ties k + 1/2 of the scale and values far beyond the code range (saturation)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 120 * scale
    ties = (torch.randint(-140, 140, shape, generator=g) + 0.5) * scale
    return torch.where(torch.rand(shape, generator=g) < 0.3, ties, x)


def _ort(graph_nodes, inits, x: np.ndarray, out_shape) -> np.ndarray:
    g = helper.make_graph(graph_nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


class _Act(nn.Module):
    def __init__(self, q):
        super().__init__()
        self.q = ActivationQDQ(q)

    def forward(self, x):
        return self.q(x)


@pytest.mark.parametrize("kind,bits,zp", [("uniform", 8, None), ("uniform_asym", 8, 37.0), ("uniform", 6, None),
                                          ("uniform_asym", 4, 3.0)])
def test_activation_qdq_matches_hand_graph_and_simulator(tmp_path, kind, bits, zp):
    """Per-tensor activation: the exported graph, a QuantizeLinear/DequantizeLinear graph built by hand with the
    same scale and zero point, and the simulator give the same values (ties round half to even, saturation)."""
    s = 0.0173
    q = _quantizer(kind, bits, Layout(), torch.tensor([s]), torch.tensor([zp]) if zp is not None else None)
    x = _inputs(s)
    path = write_onnx(_Act(q), x, tmp_path / "act.onnx")
    exported = session(path).run(None, {"image": x.numpy()})[0]
    dtype = TensorProto.INT8 if kind == "uniform" else TensorProto.UINT8
    lo, hi = ((-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if kind == "uniform" else (0, 2 ** bits - 1))
    z = zp or 0.0
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["xc"]),
             helper.make_node("QuantizeLinear", ["xc", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    inits = [numpy_helper.from_array(np.array((lo - z) * s, np.float32), "lo"),
             numpy_helper.from_array(np.array((hi - z) * s, np.float32), "hi"),
             numpy_helper.from_array(np.array(s, np.float32), "s"),
             helper.make_tensor("z", dtype, [], [int(z)])]
    hand = _ort(nodes, inits, x.numpy(), x.shape)
    sim = q(x).numpy()
    # an independent formula: numpy's round (half to even), clip, dequantize
    ref = ((np.clip(np.round(x.numpy() / np.float32(s)) + z, lo, hi) - z) * np.float32(s)).astype(np.float32)
    np.testing.assert_array_equal(sim, ref)
    np.testing.assert_array_equal(hand, ref)
    np.testing.assert_array_equal(exported, ref)
    assert np.any(x.numpy() / s + z > hi + 1) and np.any(x.numpy() / s + z < lo - 1)   # saturation exercised
    assert np.any((x.numpy() / s) % 1 == 0.5)               # ties exercised


class _Lin(nn.Module):
    def __init__(self, qx, q, w):
        super().__init__()
        self.x, self.w = ActivationQDQ(qx), WeightDQ(q, w, transpose=True)

    def forward(self, x):
        return self.x(x) @ self.w()


@pytest.mark.parametrize("kind", ["uniform", "uniform_asym"])
def test_per_channel_weight_matches_hand_graph(tmp_path, kind):
    """Per-output-channel weight codes with DequantizeLinear(axis=1) on the transposed weight: the exported graph
    equals a hand-built graph of the numpy-rounded codes and the simulator's fake-quantized weight. The input is
    quantized too, as in a deployable model (a float input makes ORT rewrite DQ -> MatMul into MatMulNBits, whose
    arithmetic is not the simulator's)."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 7, generator=g)
    s = torch.rand(5, generator=g) * 0.02 + 0.005
    zp = torch.randint(100, 150, (5,), generator=g).float() if kind == "uniform_asym" else None
    q = _quantizer(kind, 8, Layout(-2, 5, 5), s, zp)
    x = torch.randn(3, 7, generator=g)
    qx = _quantizer("uniform", 8, Layout(), torch.tensor([0.02]))
    exported = session(write_onnx(_Lin(qx, q, w), x, tmp_path / "w.onnx")).run(None, {"image": x.numpy()})[0]
    lo, hi, dt, npdt = ((-128, 127, TensorProto.INT8, np.int8) if kind == "uniform"
                        else (0, 255, TensorProto.UINT8, np.uint8))
    z = (zp if zp is not None else torch.zeros(5)).numpy()
    codes = np.clip(np.round(w.numpy() / s.numpy()[:, None]) + z[:, None], lo, hi).astype(npdt).T
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["qx"]),
             helper.make_node("DequantizeLinear", ["qx", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["c", "s", "z"], ["wt"], axis=1),
             helper.make_node("MatMul", ["xq", "wt"], ["y"])]
    inits = [numpy_helper.from_array(codes, "c"), numpy_helper.from_array(s.numpy(), "s"),
             numpy_helper.from_array(z.astype(npdt), "z"), numpy_helper.from_array(np.array(0.02, np.float32), "sx"),
             helper.make_tensor("zx", TensorProto.INT8, [], [0])]
    hand = _ort(nodes, inits, x.numpy(), (3, 5))
    sim = (qx(x) @ q(w).t()).numpy()
    np.testing.assert_allclose(exported, hand, rtol=0, atol=1e-6)
    np.testing.assert_allclose(exported, sim, rtol=0, atol=1e-5)
    assert _dq_codes(tmp_path / "w.onnx").tolist() == codes.tolist()


def _dq_codes(path) -> np.ndarray:
    m = onnx.load(str(path))
    ints = [numpy_helper.to_array(i) for i in m.graph.initializer
            if i.data_type in (TensorProto.INT8, TensorProto.UINT8) and numpy_helper.to_array(i).ndim == 2]
    return ints[0]


def test_fractional_zero_point_and_wide_codes_are_not_deployable():
    from ptq.quantizers.base import NotDeployable

    q = _quantizer("uniform_asym", 8, Layout(), torch.tensor([0.1]), torch.tensor([3.5]))
    with pytest.raises(NotDeployable, match="fractional zero point"):
        q.integer_form()
    for zp in (-5.0, 256.0):   # all weights of a channel of one sign: zero is not on the grid
        with pytest.raises(NotDeployable, match="zero point outside its codes 0..255"):
            _quantizer("uniform_asym", 8, Layout(), torch.tensor([0.1]), torch.tensor([zp])).integer_form()
    assert _quantizer("uniform_asym", 8, Layout(), torch.tensor([0.1]), torch.tensor([255.0])).integer_form()
    with pytest.raises(NotDeployable, match="10 bits"):
        _quantizer("uniform", 10, Layout(), torch.tensor([0.1])).integer_form()
    for kind in ("twin_softmax", "log2", "log_sqrt2", "adalog_softmax", "twin_gelu"):
        with pytest.raises(NotDeployable, match="simulation only"):
            QUANTIZERS[kind](8, Layout()).integer_form()


@pytest.mark.parametrize("preset,model", [("base_ptq_deploy", "fmnist_vit"), ("ptq4vit_deploy", "fmnist_swin")])
def test_deploy_presets_are_deployable(compose, preset, model):
    """The deployable forms of BasePTQ and PTQ4ViT: every quantizer has an integer form, every attention operand
    per tensor (ONNX Runtime's integer matmuls take one activation scale)."""
    from ptq.export import deployability
    from ptq.models import build_model
    from ptq.quant import quant_ops, wrap_model
    from ptq.quant.config import resolve_ptq_config
    from ptq.quant.modules import QMatMul

    cfg = compose([f"quantizer={preset}", f"model={model}", "bits=w8a8", "logger=none"])
    net = build_model(cfg.model)
    wrap_model(net, resolve_ptq_config(cfg))
    ops = quant_ops(net)
    for op in ops.values():
        for q in op.quantizers().values():
            q.initialized = True
    assert deployability(net)["deployable"] is True
    matmuls = [q for op in ops.values() if isinstance(op, QMatMul) for q in op.quantizers().values()]
    assert matmuls and all(q.layout.axis is None for q in matmuls)


@pytest.mark.parametrize("preset", ["ptq4vit", "adalog"])
def test_non_deployable_methods_are_refused(compose, preset):
    """PTQ4ViT's twin softmax and AdaLog's quantizers: deployability names the slots; export refuses in one line."""
    from ptq.errors import PTQError
    from ptq.export import deployability, export_modules
    from ptq.models import build_model
    from ptq.quant import quant_ops, wrap_model
    from ptq.quant.config import resolve_ptq_config

    cfg = compose([f"quantizer={preset}", "logger=none"])
    model = build_model(cfg.model)
    wrap_model(model, resolve_ptq_config(cfg))
    for op in quant_ops(model).values():
        for q in op.quantizers().values():
            q.initialized = True
    rep = deployability(model)
    assert not rep["deployable"] and "softmax" in rep["simulation_only"]
    with pytest.raises(PTQError, match="not deployable: .*slot softmax: (twin_softmax|adalog_softmax)") as e:
        export_modules(model)
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def deploy_run(tmp_path_factory):
    """A small calibrated base_ptq_deploy W8A8 run of fmnist_vit (few images, a coarse grid)."""
    from ptq.app import run
    from ptq.cli import compose_config

    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    cfg = compose_config(["quantizer=base_ptq_deploy", "bits=w8a8", "logger=none", "progress=false",
                          "data.max_test=64", "calib.n_images=4", "quantizer.search.n=4", "threads=1"])
    res = run(cfg, out)
    return out, res


def test_testbed_export_runs_every_matmul_in_integer_kernels(deploy_run):
    from ptq.export.__main__ import export_run, parity

    out, res = deploy_run
    assert res["deployability"]["deployable"] is True
    path, cfg, model, _ = export_run(out)
    rep = parity(path, cfg, model, max_test=64)
    ints = sum(rep["integer_kernels"].values())
    assert ints == rep["quantized_linears"] + rep["quantized_matmuls"] == 17 + 8
    assert set(rep["float_kernels"]) <= {"Conv"}           # the patch conv: its image input stays float
    assert rep["agreement_simulated"] >= 98.0
    assert rep["max_abs_logit_diff"] < 0.5


def test_bad_inputs_one_line_nothing_written(tmp_path, deploy_run, capsys):
    from ptq.export.__main__ import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    out, _ = deploy_run
    no_params = tmp_path / "no_params"
    no_params.mkdir()
    (no_params / "results.json").write_text((out / "results.json").read_text())
    assert main([str(no_params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "holds no results.json" in err[0] and "quant_params.safetensors" in err[1]
    assert not list(empty.iterdir()) and sorted(p.name for p in no_params.iterdir()) == ["results.json"]
    res = json.loads((out / "results.json").read_text())
    res["config"]["quantizer"]["recipe"] = ["init_quantized_pass", "reparam_layernorm"]
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "results.json").write_text(json.dumps(res))
    (changed / "quant_params.safetensors").write_bytes((out / "quant_params.safetensors").read_bytes())
    assert main([str(changed)]) == 2
    assert "changed the float weights" in capsys.readouterr().err
    assert not (changed / "model.onnx").exists()


@pytest.fixture(scope="module")
def repq_deploy_run(tmp_path_factory):
    """A small calibrated repq_vit_deploy W8A8 run of fmnist_vit (its LayerNorm fold changes the float weights)."""
    from ptq.app import run
    from ptq.cli import compose_config

    out = tmp_path_factory.mktemp("repq_run")
    torch.set_num_threads(1)
    cfg = compose_config(["quantizer=repq_vit_deploy", "bits=w8a8", "logger=none", "progress=false",
                          "data.max_test=64", "calib.n_images=4", "threads=1"])
    return out, run(cfg, out)


def test_repq_deploy_exports_its_folded_weights(repq_deploy_run):
    """RepQ-ViT's deployable preset: the run saves the folded weights; the rebuilt model has them (its float function
    is the untouched model's: the fold preserves it), integer per-tensor zero points on the folded inputs, the run's
    simulated top-1, and in ONNX Runtime every linear and attention matmul in integer kernels, matching the
    simulator on random inputs."""
    from ptq.export.__main__ import export_run, parity
    from ptq.export.float_weights import WEIGHTS_FILE
    from ptq.export.runtime import run_logits, session
    from ptq.models import build_model
    from ptq.quant import set_quant_enabled
    from ptq.quant.stages.repq import layernorm_linear_pairs

    out, res = repq_deploy_run
    assert res["deployability"]["deployable"] is True and res["weights_file"] == WEIGHTS_FILE
    path, cfg, model, _ = export_run(out)
    pairs = layernorm_linear_pairs(model)
    assert len(pairs) == 8
    for _, _, linear in pairs:
        q = linear.input_quantizer
        assert q.layout.axis is None and q.zero_point.numel() == 1
        assert torch.equal(q.zero_point, q.zero_point.round())
    fresh = build_model(cfg.model, "cpu").eval()
    assert not torch.allclose(fresh.blocks[0].norm1.weight, model.blocks[0].norm1.weight)   # folded
    x = torch.randn(8, *fresh.default_cfg["input_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        set_quant_enabled(model, False)
        torch.testing.assert_close(model(x), fresh(x), atol=1e-4, rtol=1e-4)
        set_quant_enabled(model, True)
        sim = model(x)
    got = torch.from_numpy(run_logits(session(path), x.numpy()))
    assert (got - sim).abs().max().item() < 0.1
    assert torch.equal(got.argmax(-1), sim.argmax(-1))
    rep = parity(path, cfg, model, max_test=64)
    assert rep["top1_simulated"] == pytest.approx(res["top1"])
    assert sum(rep["integer_kernels"].values()) == rep["quantized_linears"] + rep["quantized_matmuls"] == 25
    assert rep["agreement_simulated"] >= 98.0


def test_repq_vit_itself_is_not_deployable(tmp_path):
    """RepQ-ViT's own preset: log_sqrt2 post-softmax and the fractional z* of its fold are simulation only; its run
    records why and saves no changed weights (it cannot export)."""
    from ptq.app import run
    from ptq.cli import compose_config
    from ptq.export.float_weights import WEIGHTS_FILE

    torch.set_num_threads(1)
    cfg = compose_config(["quantizer=repq_vit", "bits=w8a8", "logger=none", "progress=false", "data.max_test=16",
                          "calib.n_images=4", "threads=1"])
    res = run(cfg, tmp_path)
    assert res["deployability"]["deployable"] is False and "weights_file" not in res
    assert not (tmp_path / WEIGHTS_FILE).exists()
    why = res["deployability"]["simulation_only"]
    assert set(why) == {"softmax", "ln_input"}
    assert "log_sqrt2 has no standard integer operator" in why["softmax"]
    assert "fractional zero point" in why["ln_input"]


def test_changed_weights_bad_inputs_one_line(tmp_path, repq_deploy_run, capsys):
    """A recorded non-deployable run is refused from its results.json; a weight file that does not fit the model
    is refused naming the weight; nothing is written."""
    import shutil

    from ptq.export.__main__ import main
    from ptq.export.float_weights import WEIGHTS_FILE

    out, _ = repq_deploy_run
    refused = tmp_path / "refused"
    skip = shutil.ignore_patterns("model.onnx", "export.json")   # what another test's export left there
    shutil.copytree(out, refused, ignore=skip)
    res = json.loads((refused / "results.json").read_text())
    res["deployability"] = {"deployable": False, "float_ops": [],
                            "simulation_only": {"softmax": "twin_softmax has no standard integer operator "
                                                           "(simulation only)"}}
    (refused / "results.json").write_text(json.dumps(res))
    assert main([str(refused)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not deployable: slot softmax: twin_softmax" in err[0]
    bad = tmp_path / "bad_weights"
    shutil.copytree(out, bad, ignore=skip)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(bad / WEIGHTS_FILE))
    dropped = sorted(weights)[0]
    del weights[dropped]
    save_file(weights, str(bad / WEIGHTS_FILE))
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"lacks the weight '{dropped}'" in err[0]
    assert not (refused / "model.onnx").exists() and not (bad / "model.onnx").exists()


def test_methods_report_deployable_column_only_where_recorded(tmp_path):
    """The settings table (one row per method column) says deployable yes / no (the simulation-only slots) and
    runs.csv carries the reason; a report of runs that never recorded it has neither column (tables unchanged)."""
    from ptq import report
    from tests.results_factory import write_job

    old = tmp_path / "old"
    write_job(old / "a", "fmnist_vit", "base_ptq", 8, 88.0)
    rep = report.build_report([old])
    assert "deployable" not in rep["settings"].display.columns
    assert not {"deployable", "simulation_only"} & set(rep["tables"]["runs"].columns)
    new = tmp_path / "new"
    for name, quantizer, dep in (("a", "base_ptq", {"deployable": True, "simulation_only": {}}),
                                 ("b", "ptq4vit", {"deployable": False, "simulation_only": {
                                     "softmax": "twin_softmax has no standard integer operator (simulation only)",
                                     "gelu": "twin_gelu has no standard integer operator (simulation only)"}})):
        folder = write_job(new / name, "fmnist_vit", quantizer, 8, 88.0)
        data = json.loads((folder / "results.json").read_text())
        data["deployability"] = {**dep, "float_ops": []}
        (folder / "results.json").write_text(json.dumps(data))
    rep = report.build_report([new])
    cells = dict(zip(rep["settings"].display["column"], rep["settings"].display["deployable"]))
    assert cells["BasePTQ W8A8"] == "yes"
    assert cells["PTQ4ViT W8A8"] == ("no (gelu: twin_gelu has no standard integer operator; "
                                     "softmax: twin_softmax has no standard integer operator)")
    runs = rep["tables"]["runs"].set_index("quantizer")
    assert bool(runs.loc["base_ptq", "deployable"]) and runs.loc["base_ptq", "simulation_only"] == ""
    assert runs.loc["ptq4vit", "simulation_only"].startswith("gelu: twin_gelu")


def test_model_weights_round_trip_creates_a_folded_bias(tmp_path):
    """Saved weights load into a freshly built model: a bias the fold created where the model had none is created,
    a weight of another shape is refused in one line naming it."""
    from ptq.errors import PTQError
    from ptq.export.float_weights import load_model_weights, model_weights, save_model_weights

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 3, bias=False))

    folded = net()
    folded[1].bias = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]), requires_grad=False)
    with torch.no_grad():
        folded[0].weight.mul_(3.0)
    path = save_model_weights(folded, tmp_path / "w.safetensors")
    fresh = net()
    load_model_weights(fresh, path)
    assert set(model_weights(fresh)) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    for k, v in model_weights(folded).items():
        assert torch.equal(model_weights(fresh)[k], v)
    other = nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 5))
    shape_of = r"has the weight '1\.(bias' \(3,\)|weight' \(3, 4\)) that this model does not have"
    with pytest.raises(PTQError, match=shape_of):
        load_model_weights(other, path)


def test_interleaved_medians_alternate_sessions_after_warmup():
    """The speed measurement: each session warms up, then the sessions take turns run by run (a load change hits
    both alike); the median of each one's runs is returned."""
    from ptq.export.runtime import interleaved_medians

    calls = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def get_inputs(self):
            return [type("I", (), {"name": "image"})()]

        def run(self, _, feeds):
            assert set(feeds) == {"image"}
            calls.append(self.name)

    med = interleaved_medians({"fp32": Fake("fp32"), "int8": Fake("int8")}, np.zeros(1, np.float32), runs=3,
                              warmup=2)
    assert calls == ["fp32", "fp32", "int8", "int8"] + ["fp32", "int8"] * 3
    assert set(med) == {"fp32", "int8"} and all(v >= 0 for v in med.values())
