"""experiments/compensation/grid.py on synthetic results.json files whose cells are worked out by hand: mean ± std
over the calibration seeds, the change against compensate=none paired by seed, the cost, the missing cells."""
from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest

from tests.results_factory import qwt_record, write_compensated_job

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grid():
    spec = importlib.util.spec_from_file_location("compensation_grid", ROOT / "experiments/compensation/grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sweep(tmp_path) -> Path:
    """RepQ-ViT W4A4: none on seeds 0-2, QwT on seeds 0-2 (seed 1 drops its map), QwT-v2 on seeds 0-1 only."""
    d = tmp_path / "compensation"
    for seed, top1, agree, kl in ((0, 80.0, 90.0, 0.10), (1, 81.0, 91.0, 0.12), (2, 83.0, 92.0, 0.08)):
        write_compensated_job(d / f"none{seed}", "none", seed, top1, agreement=agree, kl=kl)
    for seed, top1, agree, kl, kept, sec in ((0, 82.0, 93.0, 0.05, True, 1.0), (1, 82.0, 91.5, 0.09, False, 2.0),
                                             (2, 86.0, 94.0, 0.06, True, 4.0)):
        write_compensated_job(d / f"qwt{seed}", "qwt", seed, top1, qwt_record("paper", kept, sec), agreement=agree,
                              kl=kl, compat="paper", n_images=512)
    v2 = {**qwt_record("paper", True, 0.5), "name": "qwt_v2", "added_params": 768, "added_macs_per_image": 38400}
    for seed, top1, kl in ((0, 80.5, 0.09), (1, 80.0, 0.15)):
        write_compensated_job(d / f"v2_{seed}", "qwt_v2", seed, top1, v2, agreement=90.0, kl=kl, compat="paper",
                              n_images=512)
    return d


def test_cells_by_hand(grid, sweep):
    s = grid.summarize(grid.runs([sweep])).set_index("compensation")
    assert list(s.index) == ["none", "QwT", "QwT-v2"]
    qwt, none = s.loc["QwT"], s.loc["none"]
    assert qwt["n"] == 3 and qwt["pairs"] == 3
    assert qwt["top-1 mean"] == pytest.approx(statistics.mean([82, 82, 86]))
    assert qwt["top-1 std"] == pytest.approx(statistics.stdev([82, 82, 86]))        # 2.3094
    assert qwt["KL std"] == pytest.approx(statistics.stdev([0.05, 0.09, 0.06]))
    # paired by seed: top-1 82-80, 82-81, 86-83 = 2, 1, 3; KL 0.05/0.10, 0.09/0.12, 0.06/0.08 -> -50, -25, -25 %
    assert (qwt["d top-1 mean"], qwt["d top-1 std"]) == pytest.approx((2.0, 1.0))
    assert (qwt["d agreement mean"], qwt["d agreement std"]) == pytest.approx(
        (statistics.mean([3.0, 0.5, 2.0]), statistics.stdev([3.0, 0.5, 2.0])))
    assert (qwt["d KL mean"], qwt["d KL std"]) == pytest.approx(
        (statistics.mean([-50, -25, -25]), statistics.stdev([-50, -25, -25])))
    # the cost: seed 1 dropped its map (0 parameters), seconds 1, 2, 4
    params, macs = grid.model_cost("fmnist_vit")
    assert (qwt["kept"], qwt["params added"], qwt["MACs/image added"]) == (
        "0-1 of 1", f"0-9,312 ({100 * 9312 / params:.1f} %)", f"0-465,600 ({100 * 465600 / macs:.1f} %)")
    assert (qwt["comp s mean"], qwt["comp s std"]) == pytest.approx((7 / 3, statistics.stdev([1.0, 2.0, 4.0])))
    v2 = s.loc["QwT-v2"]   # two seeds: paired on those two only (0.5 - 80 = +0.5, 80 - 81 = -1)
    assert v2["n"] == 2 and v2["pairs"] == 2
    assert (v2["d top-1 mean"], v2["d top-1 std"]) == pytest.approx((-0.25, statistics.stdev([0.5, -1.0])))
    assert (v2["d KL mean"], v2["d KL std"]) == pytest.approx(
        (statistics.mean([-10.0, 25.0]), statistics.stdev([-10.0, 25.0])))
    assert (none["kept"], none["params added"], none["comp s mean"]) == ("—", "0", 0.0)
    assert grid.signed(-16.94, float("nan"), 1, 1, " %") == "-16.9 %†"
    assert grid.signed(0.5, 0.25, 2, 2) == "+0.50 ± 0.25"
    assert grid.signed(float("nan"), float("nan"), 0, 2) == ""


def test_table_plot_and_missing_cells(grid, sweep, tmp_path, capsys):
    out = tmp_path / "out"
    grid.main([str(sweep), "--out", str(out)])
    text = (out / "grid.md").read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    rows = {line.split(" | ")[3]: line for line in text.splitlines() if line.startswith("| fmnist_vit")}
    assert rows["QwT"] == ("| fmnist_vit | RepQ-ViT | W4A4 | QwT | 3 | 83.33 ± 2.31 | 92.83 ± 1.26 | 0.0667 ± 0.0208 "
                           "| +2.00 ± 1.00 | +1.83 ± 1.26 | -33.3 ± 14.4 % | 0-1 of 1 | 0-9,312 (2.0 %) "
                           "| 0-465,600 (1.9 %) | 2.3 ± 1.5 |")
    assert rows["none"].endswith("| — | — | — | — | 0 | 0 | 0 |")
    assert "| QwT-v2 | 2 | 80.25 ± 0.35 |" in rows["QwT-v2"]
    # the declared grid: 4 methods x 4 compensations per bit width, 3 seeds
    assert "- fmnist_vit W3A3: all 16 cells (not started)" in text
    w4 = next(line for line in text.splitlines() if line.startswith("- fmnist_vit W4A4: "))
    assert "RepQ-ViT qwt_v2 (2 of 3 seeds)" in w4 and "RepQ-ViT erq (0 of 3 seeds)" in w4
    assert "RepQ-ViT qwt " not in w4 and "RepQ-ViT none" not in w4
    assert (out / "grid.png").stat().st_size > 0 and (out / "grid.csv").read_text().startswith("model,method,bits")


def test_model_cost_by_hand(grid):
    """fmnist_vit (width 96, 4 blocks, 49 patches of 4x4x1 + the class token = 50 tokens, MLP 384, 10 classes):
    per block qkv, proj, fc1, fc2 = 50 x 96 x (288 + 96 + 384 + 384) MACs and the attention matmuls 2 x 50^2 x 96;
    the patch embedding 49 x 96 x 16, the head 96 x 10. Parameters: timm's count is the sum of the tensors."""
    blocks = 4 * (50 * 96 * (288 + 96 + 384 + 384) + 2 * 50 * 50 * 96)
    params, macs = grid.model_cost("fmnist_vit")
    assert macs == blocks + 49 * 96 * 16 + 96 * 10
    per_block = 96 * 288 + 288 + 96 * 96 + 96 + 96 * 384 + 384 + 384 * 96 + 96 + 4 * 96   # + two LayerNorms
    embed = 96 * 16 + 96 + 96 + 50 * 96   # conv, its bias, class token, position embedding
    assert params == 4 * per_block + embed + 2 * 96 + 96 * 10 + 10     # + final LayerNorm, head
    assert grid.model_cost("fmnist_vit+severe") == (params, macs)     # a stressed test-bed: its base model
