"""recon=aphq_official's code details: recon.rec_norm=first (the block-reconstruction loss normalization) and
recon.target=original (targets from the model before MLP reconstruction); the modified float model after a fold."""
from __future__ import annotations

import pytest
import torch
from conftest import random_model_and_images

from ptq.errors import PTQError


def test_first_step_normalization_by_hand():
    """Each step's loss divided by the first step's value, times 2 (a number: the gradient keeps its direction)."""
    from ptq.recon.stage import first_step_normalized

    values = iter([5.0, 2.5, 10.0])
    crit = first_step_normalized(lambda out, target, idx: out.sum() * next(values))
    out = torch.ones(1, requires_grad=True)
    got = [crit(out, None, None) for _ in range(3)]
    assert [g.item() for g in got] == [2.0, 1.0, 4.0]
    got[1].backward()
    assert out.grad.item() == pytest.approx(2.5 * 2 / 5.0)


def test_official_preset_sets_it_and_bad_values_are_refused(compose):
    from ptq.recon.config import resolve_recon

    assert resolve_recon(compose(["recon=aphq_official"]).recon).rec_norm == "first"
    assert resolve_recon(compose(["recon=aphq"]).recon).rec_norm == "none"
    with pytest.raises(PTQError, match=r"recon.rec_norm=bogus; valid: first, none"):
        resolve_recon(compose(["recon=aphq", "recon.rec_norm=bogus"]).recon)


def test_original_target_reconstructs_towards_the_gelu_model():
    """recon.target=original with MLP reconstruction: the units' float targets are the model as built (GELU), not
    the ReLU model; the copy it keeps is outside the module tree."""
    import ptq.plugins  # noqa: F401
    from ptq.cli import compose_config
    from ptq.quant.config import resolve_ptq_config
    from ptq.quant.recipe import quantize_model
    from ptq.recon import stage
    from ptq.recon.mlp_state import modified_float, original_float

    seen = {}
    real = stage.reconstruct_unit

    def spy(name, unit, rc, fp_in, q_in, target, *a, **k):
        seen[name] = target.clone()
        return real(name, unit, rc, fp_in, q_in, target, *a, **k)

    for tgt in ("float", "original"):
        cfg = compose_config(["quantizer=repq_vit", "bits=w8a8", "recon=aphq", f"recon.target={tgt}", "recon.iters=0",
                              "recon.loss=mse", "mlp_recon.loss=mse",
                              "recon.eval_images=4", "mlp_recon.iters=0", "mlp_recon.eval_images=4", "logger=none",
                              "model.kwargs.depth=1", "model.checkpoint=null"])
        pcfg = resolve_ptq_config(cfg)
        model, x, extra = random_model_and_images(cfg, 8, n_calib=4)
        with torch.no_grad():
            gelu_block = model.blocks[0](model._pos_embed(model.patch_embed(extra[0])))
        stage.reconstruct_unit = spy
        try:
            quantize_model(model, pcfg, x, torch.zeros(4, dtype=torch.long), progress=False, recon_data=extra)
        finally:
            stage.reconstruct_unit = real
        assert isinstance(model.blocks[0].mlp.act, torch.nn.ReLU)
        kept = original_float(model)
        assert (kept is not None) == (tgt == "original")
        assert all(not n.startswith("_ptq") for n, _ in model.named_modules())
        close = torch.allclose(seen["blocks.0"], gelu_block, atol=1e-5)
        assert close == (tgt == "original"), tgt
        # the modified float model the report evaluates is the ReLU model with the distilled (here: unchanged)
        # weights, not changed by RepQ-ViT's LayerNorm fold into fc1 after the MLP stage (a shared-memory snapshot was)
        fresh, _, _ = random_model_and_images(cfg, 8, n_calib=4)
        relu, _, _ = random_model_and_images(cfg, 8, n_calib=4)
        relu.blocks[0].mlp.act = torch.nn.ReLU()
        with torch.no_grad():
            assert torch.equal(modified_float(model, fresh)(extra[0]), relu(extra[0]))
