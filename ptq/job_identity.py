"""A job's identity for resume and sibling reuse in sweeps: its resolved config restricted to the keys the job
reads, as they are declared where they are read.

- every job: the evaluation (`ptq.evaluate.EVALUATION_READS`: model, data, eval, seed, device), the logger and
  whether the model is quantized; the float model (quantizer.enabled false) reads nothing else;
- every quantized job (`QUANTIZED_JOB_READS`): the method's name, compat, recipe and parameter file, the bits, the
  calibration draw, each plug-in stage's switch (`<group>.name`), and the operand slots the wrap reads
  (`ptq.quant.wrap.slot_reads`: a disabled slot only as disabled);
- each stage of the job's recipe (plug-ins included): the keys it declared when it registered
  (`register_stage(name, reads=...)`, ptq/quant/stage.py), e.g. the search's metric and candidate grid, the
  Hessian metric's gradient source (ptq/quant/gradients.py `gradient_reads`), the whole `recon` group when
  reconstruction is on. A stage this code does not know (a results file of older code) reads every method group.

A key this code's schema does not have (a results file written by older code) is kept: it may have been read
then. Jobs with equal identities give equal results; this module names no stage. The job-control keys
(`ptq.results_file.BOOKKEEPING_KEYS`: force, progress, threads) are read by nothing, so no identity holds them.
"""
from __future__ import annotations

import dataclasses
import functools

import ptq.plugins  # noqa: F401  (the plug-in stages: their switches and reads)
import ptq.quant.stages  # noqa: F401  (every method's stages and their reads)
from ptq.evaluate import EVALUATION_READS
from ptq.quant.stage import SPECS, expand_recipe, plugins
from ptq.quant.wrap import slot_reads
from ptq.schema import Config, QuantizerConfig

EVERY_JOB_READS = EVALUATION_READS + ("logger", "task_name", "quantizer.enabled")
QUANTIZED_JOB_READS = ("quantizer.name", "quantizer.compat", "quantizer.recipe", "quantizer.load", "bits",
                       "calib.n_images", "calib.seed", "calib.transform")
# What a stage unknown to this code may read.
METHOD_GROUPS = ("quantizer", "metric", "calib", "recon")
DEFAULT_RECIPE = QuantizerConfig().recipe


def _switch(config: dict):
    return lambda group: (config.get(group) or {}).get("name")


def job_recipe(config: dict) -> list[str]:
    """The stages the job runs: its method's recipe and the plug-in stages its config switches on."""
    recipe = (config.get("quantizer") or {}).get("recipe") or DEFAULT_RECIPE
    return expand_recipe(recipe, _switch(config))


def job_reads(config: dict) -> list[str]:
    """The dotted key prefixes the job `config` (a resolved config as a dict) reads."""
    keys = list(EVERY_JOB_READS)
    if not (config.get("quantizer") or {}).get("enabled", True):
        return keys
    keys += QUANTIZED_JOB_READS
    keys += [f"{spec.plugin.group}.name" for spec in plugins()]
    keys += slot_reads(config)
    for stage in job_recipe(config):
        spec = SPECS.get(stage)
        keys += spec.read_keys(config) if spec is not None else METHOD_GROUPS
    return keys


@functools.cache
def _schema_leaves() -> frozenset[str]:
    """Every key path of the typed schema; a dictionary-valued field (model.kwargs, a slot's options) is a leaf."""
    leaves: set[str] = set()

    def walk(cls, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
            else:
                leaves.add(f"{prefix}{f.name}")

    walk(Config, "")
    return frozenset(leaves)


def _in_schema(path: str) -> bool:
    leaves = _schema_leaves()
    parts = path.split(".")
    return any(".".join(parts[:i]) in leaves for i in range(1, len(parts) + 1)) or any(
        leaf.startswith(f"{path}.") for leaf in leaves)


def restrict(config: dict, keys: list[str], prefix: str = "") -> dict:
    """The part of `config` under the read `keys`, plus every key the schema does not know."""
    out = {}
    for k, v in config.items():
        path = f"{prefix}{k}"
        if any(path == r or path.startswith(f"{r}.") for r in keys) or not _in_schema(path):
            out[k] = v
        elif isinstance(v, dict) and any(r.startswith(f"{path}.") for r in keys):
            sub = restrict(v, keys, f"{path}.")
            if sub:
                out[k] = sub
    return out


def job_identity(config: dict) -> dict:
    """The part of a resolved config that can change a job's numbers (module docstring): jobs with equal
    identities give equal results."""
    return restrict(config, job_reads(config))
