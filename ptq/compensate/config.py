"""`resolve_compensate`: the typed `compensate` group validated (each bad value a one-line PTQError), its nulls
resolved from compat, and the recipe orders it allows checked."""
from __future__ import annotations

import dataclasses

from omegaconf import DictConfig, OmegaConf

from ptq.compensate.side import PRECISIONS
from ptq.compensate.solver import SOLVERS
from ptq.compensate_defaults import COMPENSATE_BY_COMPAT as BY_COMPAT
from ptq.errors import PTQError, choices
from ptq.schema import CompensateConfig

COMPATS = ("paper", "official")
AUGMENTATIONS = ("none", "train")
STAGE = "compensate"


def two_part_default(name: str | None, compat: str | None) -> bool:
    """compensate.two_part=null: on for ERQ's official form (the released code's default for qkv / fc1), else off."""
    return name == "erq" and compat == "official"


def check_order(stages: list[str], after_reconstruct: set[str]) -> None:
    """compensate runs after the method's stages and reconstruction, before the stages that must follow
    reconstruction (AdaLog's fold_shift: with it done, the model with quantizers off is no longer the float model
    the maps are fitted to); nothing else may follow it."""
    at = stages.index(STAGE)
    later = [s for s in stages[at + 1:] if s not in after_reconstruct]
    if later:
        raise PTQError(f"quantizer.recipe runs {later[0]} after compensate; valid: compensate after the method's "
                       f"stages and reconstruct, followed only by {choices(sorted(after_reconstruct)) or '(none)'}")
    early = [s for s in stages[:at] if s in after_reconstruct]
    if early:
        raise PTQError(f"quantizer.recipe runs {early[0]} before compensate; valid: compensate before {early[0]} "
                       f"(the maps are fitted to the float model, which {early[0]} changes)")


def resolve_compensate(c: DictConfig) -> CompensateConfig:
    """The compensation settings as a dataclass (recorded in results.json's ptq_config)."""
    from ptq.compensate import COMPENSATORS

    cc = CompensateConfig(**OmegaConf.to_container(c, resolve=True))
    if cc.name != "none" and cc.name not in COMPENSATORS:
        raise PTQError(f"unknown compensate.name={cc.name}; valid: {choices(['none', *COMPENSATORS])}")
    if cc.compat not in COMPATS:
        raise PTQError(f"unknown compensate.compat={cc.compat}; valid: {choices(COMPATS)}")
    if cc.name != "none" and cc.compat not in COMPENSATORS[cc.name].compat:
        raise PTQError(f"compensate.compat={cc.compat} does not exist for compensate.name={cc.name} (no reference "
                       f"code to follow); valid: {choices(COMPENSATORS[cc.name].compat)}")
    cc = dataclasses.replace(cc, **{k: v for k, v in BY_COMPAT[cc.compat].items() if getattr(cc, k) is None})
    for key, valid in (("augmentation", AUGMENTATIONS), ("solver", SOLVERS), ("precision", PRECISIONS)):
        if getattr(cc, key) not in valid:
            raise PTQError(f"unknown compensate.{key}={getattr(cc, key)}; valid: {choices(valid)}")
    for key, ok, what in (("n_images", cc.n_images >= 1, "an integer >= 1"),
                          ("batch_size", cc.batch_size >= 1, "an integer >= 1"),
                          ("ridge", cc.ridge >= 0, "a number >= 0"),
                          ("r2_gate", cc.r2_gate < 1, "a number < 1 (R^2 is at most 1)"),
                          ("seed", cc.seed is None or 0 <= cc.seed < 2**32, "0..2^32-1 or null"),
                          ("coe", cc.coe >= 0, "a number >= 0"),
                          ("head_lambda", cc.head_lambda >= 0, "a number >= 0"),
                          ("conv_lambda", cc.conv_lambda is None or cc.conv_lambda >= 0, "a number >= 0 or null"),
                          ("iterations", cc.iterations >= 0, "an integer >= 0"),
                          ("rows_per_group", cc.rows_per_group >= 1, "an integer >= 1")):
        if not ok:
            raise PTQError(f"impossible compensate.{key}={getattr(cc, key)}; valid: {what}")
    if not cc.blocks:
        raise PTQError("impossible compensate.blocks=[]; valid: [all], or block names / indices")
    if cc.two_part is None:   # the released ERQ code's default (SPEC.md ERQ); the paper form and other stages: off
        cc = dataclasses.replace(cc, two_part=two_part_default(cc.name, cc.compat))
    if cc.two_part and cc.name != "erq":
        raise PTQError(f"compensate.two_part=true is an option of compensate.name=erq (ERQ's two-part weights), not "
                       f"of {cc.name}; valid: compensate.two_part=false or null")
    for key, ok, what in (("two_part_percentile", 50 <= cc.two_part_percentile < 100, "a number in [50, 100)"),
                          ("two_part_rows_per_column", cc.two_part_rows_per_column >= 1, "an integer >= 1")):
        if not ok:
            raise PTQError(f"impossible compensate.{key}={getattr(cc, key)}; valid: {what}")
    if cc.name == "erq" and list(cc.blocks) != ["all"]:
        raise PTQError(f"compensate.blocks={list(cc.blocks)} is not supported by compensate.name=erq (it edits "
                       f"every quantized linear); valid: [all]")
    return cc


def check_recipe(cc: CompensateConfig, recipe: list[str]) -> None:
    """The method's `recipe`, checked when it names compensate itself (the plug-in's recipe check)."""
    from ptq.quant.stage import AFTER_RECONSTRUCT

    if STAGE in recipe:
        if cc.name == "none":
            raise PTQError("quantizer.recipe names compensate but compensate.name=none; valid: "
                           "compensate=qwt|qwt_v2|erq (the stage is appended by itself), or a recipe without "
                           "compensate")
        check_order(list(recipe), AFTER_RECONSTRUCT)
