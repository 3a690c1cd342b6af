"""`resolve_mlp_recon`: the typed `mlp_recon` group (ptq/schema.py, MLPReconConfig) validated, each bad value a
one-line PTQError, and the recipe orders it allows checked (it runs before every other stage)."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ptq.errors import PTQError, choices
from ptq.recon.config import DIRECTIONS
from ptq.recon.losses import RECON_LOSSES
from ptq.schema import MLPReconConfig

STAGE = "mlp_reconstruct"
# the reference's clamp percentile by activation bits (configs/{2,3,4}bit/best.py); other widths take 0.98
CLAMP_PCT_BY_A_BITS = {3: 0.99}
CLAMP_PCT_DEFAULT = 0.98


def resolve_mlp_recon(c: DictConfig) -> MLPReconConfig:
    """The MLP-reconstruction settings as a dataclass (recorded in results.json's ptq_config)."""
    m = MLPReconConfig(**OmegaConf.to_container(c, resolve=True))
    for key, valid in (("loss", tuple(RECON_LOSSES)), ("loss_direction", DIRECTIONS)):
        if getattr(m, key) not in valid:
            raise PTQError(f"unknown mlp_recon.{key}={getattr(m, key)}; valid: {choices(valid)}")
    for key, ok, what in (("iters", m.iters >= 0, "an integer >= 0"), ("batch_size", m.batch_size >= 1, ">= 1"),
                          ("eval_images", m.eval_images >= 1, ">= 1"), ("lr", m.lr > 0, "> 0"),
                          ("rec_scale", m.rec_scale > 0, "> 0"), ("clamp_weight", m.clamp_weight >= 0, ">= 0"),
                          ("clamp_pct", m.clamp_pct is None or 0 < m.clamp_pct <= 1, "0 < p <= 1 or null"),
                          ("loss_rank", m.loss_rank >= 0, "an integer >= 0"), ("loss_draws", m.loss_draws >= 1, ">= 1"),
                          ("loss_eps", m.loss_eps > 0, "> 0"), ("loss_temp", m.loss_temp > 0, "> 0")):
        if not ok:
            raise PTQError(f"impossible mlp_recon.{key}={getattr(m, key)}; valid: {what}")
    return m


def clamp_pct(m: MLPReconConfig, a_bits: int) -> float:
    """The clamp percentile: mlp_recon.clamp_pct, or the reference's for these activation bits."""
    return m.clamp_pct if m.clamp_pct is not None else CLAMP_PCT_BY_A_BITS.get(a_bits, CLAMP_PCT_DEFAULT)


def check_recipe(m: MLPReconConfig, recipe: list[str]) -> None:
    """A method's `recipe` may name mlp_reconstruct only as its first stage, and only with mlp_recon on (the
    stage changes the float model, which every calibration stage must see changed)."""
    if STAGE not in recipe:
        return
    if m.name == "none":
        raise PTQError(f"quantizer.recipe names {STAGE} but mlp_recon.name=none; valid: mlp_recon=aphq|"
                       f"aphq_official (the stage is placed first by itself), or a recipe without {STAGE}")
    if recipe[0] != STAGE:
        raise PTQError(f"quantizer.recipe runs {recipe[0]} before {STAGE}; valid: {STAGE} first (it changes the "
                       f"float model the calibration must see)")
