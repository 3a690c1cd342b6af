"""`resolve_recon`: the typed `recon` group (ptq/schema.py, ReconConfig) validated, each bad value a PTQError."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ptq.errors import PTQError, choices
from ptq.recon.losses import RECON_LOSSES
from ptq.recon.step import PRECISIONS
from ptq.recon.units import UNITS
from ptq.schema import ReconConfig

INPUTS = ("quantized", "float")
DIRECTIONS = ("rademacher", "ones")
HEAD_LOSSES = ("mse", "kl")
REC_NORMS = ("none", "first")
TARGETS = ("float", "original")


def resolve_recon(rc: DictConfig) -> ReconConfig:
    """The reconstruction settings as a dataclass (recorded in results.json's ptq_config)."""
    r = ReconConfig(**OmegaConf.to_container(rc, resolve=True))
    for key, valid in (("unit", UNITS), ("inputs", INPUTS), ("loss", tuple(RECON_LOSSES)),
                       ("loss_direction", DIRECTIONS), ("head_loss", HEAD_LOSSES),
                       ("precision", PRECISIONS), ("rec_norm", REC_NORMS),
                       ("target", TARGETS)):
        if getattr(r, key) not in valid:
            raise PTQError(f"unknown recon.{key}={getattr(r, key)}; valid: {choices(valid)}")
    for key, ok, what in (("iters", r.iters >= 0, "an integer >= 0"), ("batch_size", r.batch_size >= 1, ">= 1"),
                          ("n_images", r.n_images >= 1, ">= 1"), ("eval_images", r.eval_images >= 1, ">= 1"),
                          ("warmup", 0 <= r.warmup <= 1, "0..1"), ("drop_prob", 0 <= r.drop_prob < 1, "0 <= p < 1"),
                          ("lr_rounding", r.lr_rounding > 0, "> 0"), ("lr_step", r.lr_step >= 0, ">= 0"),
                          ("reg_lambda", r.reg_lambda >= 0, ">= 0"), ("b_end", 0 < r.b_end <= r.b_start,
                                                                      "0 < b_end <= b_start"),
                          ("loss_rank", r.loss_rank >= 0, "an integer >= 0"), ("loss_draws", r.loss_draws >= 1, ">= 1"),
                          ("loss_eps", r.loss_eps > 0, "> 0"), ("loss_temp", r.loss_temp > 0, "> 0")):
        if not ok:
            raise PTQError(f"impossible recon.{key}={getattr(r, key)}; valid: {what}")
    return r
