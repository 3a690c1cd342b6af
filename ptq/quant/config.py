"""`resolve_ptq_config`: the composed config -> `PTQConfig` (ptq/quant/method.py), the fully resolved description
of one quantization method (torchao style: a config object per method, applied by `quantize_model`).

Built from the typed `quantizer`, `metric`, `bits` and `calib` groups (ptq/schema.py holds every key and its
default, once); every `null` there is resolved here from `compat` (paper | official), so results record concrete
values. Slots are resolved against the quantizer registry: the quantizer's name, the granularities the slot's
role allows, bits, the form and search partner (null: from compat and what the quantizer declares) and the
quantizer's own options (checked against the options it declares). The recipe's stages are checked against the
stage registry (ptq/quant/stage.py; every method's stages: ptq/quant/stages/); each plug-in stage's group (e.g.
`recon`) is resolved by the plug-in's own `resolve` into the PTQConfig field of that name, so the plug-ins
(ptq/plugins.py) must be imported before a config is resolved.
"""
from __future__ import annotations

import dataclasses

from omegaconf import DictConfig, OmegaConf

import ptq.quant.stages  # noqa: F401  (every method's stages registers itself)
from ptq.errors import PTQError, choices
from ptq.metrics import METRICS
from ptq.quant.first_last import apply_first_last
from ptq.quant.gradients import GRAD_SOURCES
from ptq.quant.method import PTQConfig
from ptq.quant.slots import GRANULARITIES, SLOTS, SlotSpec, effective_slot
from ptq.quant.stage import STAGES, TRANSFORMING_STAGES, plugins
from ptq.quantizers import QUANTIZERS
from ptq.schema import CALIB_MODES, SearchConfig

COMPAT = ("paper", "official")
PARTNERS = ("quantized", "float")
# Default gradient source of the Hessian metric in paper mode; chosen from the test-bed measurements in
# experiments/benchmark_testbed.md (see README "Gradient source"). Official mode: the reference's kl_self.
GRAD_BY_COMPAT = {"paper": "fisher", "official": "kl_self"}
INCLUDE_BETA_BY_COMPAT = {"paper": True, "official": False}
MIN_BITS, MAX_BITS = 2, 16


def _check(name: str, value, valid) -> None:
    if value not in valid:
        raise PTQError(f"unknown {name}={value}; valid: {choices(valid)}")


def _bits(key: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not MIN_BITS <= v <= MAX_BITS:
        raise PTQError(f"impossible bit width {key}={v}; valid: integers {MIN_BITS}..{MAX_BITS}")
    return v


def resolve_slots(slots: DictConfig, compat: str, w_bits: int, a_bits: int,
                  first_last: int | None = None) -> dict[str, SlotSpec]:
    """Every slot's spec after fallback to parents, each setting validated (PTQError naming the key)."""
    own: dict[str, SlotSpec] = {}
    for name, kind in SLOTS.items():
        s, key = slots[name], f"quantizer.slots.{name}"
        if kind.parent is None and not s.enabled:
            raise PTQError(f"{key}.enabled=false is impossible for a root slot (it has no parent to fall back "
                           f"to); valid: true, or {key}.quantizer=null to leave the operand float")
        if s.quantizer is not None:
            _check(f"{key}.quantizer", s.quantizer, QUANTIZERS)
        _check(f"{key}.granularity", s.granularity, GRANULARITIES[kind.role])
        bits = _bits(f"{key}.bits", s.bits) if s.bits is not None else (w_bits if kind.weight else a_bits)
        form = s.form if s.form is not None else compat
        _check(f"{key}.form", form, COMPAT)
        cls = QUANTIZERS.get(s.quantizer)
        partner = s.partner if s.partner is not None else (cls.PARTNER[compat] if cls else "quantized")
        _check(f"{key}.partner", partner, PARTNERS)
        options = OmegaConf.to_container(s.options, resolve=True)
        if cls is not None:
            unknown = sorted(set(options) - set(cls.OPTIONS))
            if unknown:
                raise PTQError(f"unknown option {key}.options.{unknown[0]} of quantizer {s.quantizer}; valid: "
                               f"{choices(cls.OPTIONS) or '(none)'}")
        own[name] = SlotSpec(name, s.quantizer, s.granularity, bits, form, partner, options)
    enabled = {name: bool(slots[name].enabled) for name in SLOTS}
    return apply_first_last({name: own[effective_slot(name, enabled)] for name in SLOTS}, first_last)


def resolve_ptq_config(cfg: DictConfig) -> PTQConfig:
    """Validate and resolve the method described by `cfg` (raises PTQError naming the bad value)."""
    q, m, b, c = cfg.quantizer, cfg.metric, cfg.bits, cfg.calib
    _check("quantizer.compat", q.compat, COMPAT)
    w_bits, a_bits = _bits("bits.w", b.w), _bits("bits.a", b.a)
    _check("metric", m.name, METRICS)
    grad = m.grad if m.grad is not None else GRAD_BY_COMPAT[q.compat]
    _check("metric.grad", grad, GRAD_SOURCES)
    _check("calib.mode", c.mode, CALIB_MODES)
    if c.n_images < 1:
        raise PTQError(f"calib.n_images={c.n_images} is impossible; valid: an integer >= 1 (at most the train split)")
    search = SearchConfig(**OmegaConf.to_container(q.search, resolve=True))
    if search.include_beta is None:
        search = dataclasses.replace(search, include_beta=INCLUDE_BETA_BY_COMPAT[q.compat])
    if search.n < 1 or search.rounds < 1 or not 0 < search.alpha <= search.beta:
        raise PTQError(f"impossible search settings alpha={search.alpha} beta={search.beta} n={search.n} "
                       f"rounds={search.rounds}; valid: 0 < alpha <= beta, n >= 1, rounds >= 1")
    recipe = list(q.recipe)
    for stage in recipe:
        _check("quantizer.recipe stage", stage, STAGES)
        if q.load and stage in TRANSFORMING_STAGES:
            raise PTQError(f"quantizer.load={q.load} cannot restore a calibration whose recipe stage {stage} "
                           f"changes the model's weights (the file holds quantizer parameters only); valid: "
                           f"quantizer.load=null (recalibrate)")
    first_last = _bits("bits.first_last", b.first_last) if b.get("first_last") is not None else None
    slots = resolve_slots(q.slots, q.compat, w_bits, a_bits, first_last) if q.enabled else {}
    own = dict(name=q.name, enabled=bool(q.enabled), compat=q.compat, w_bits=w_bits, a_bits=a_bits, recipe=recipe,
               slots=slots, metric=m.name, grad=grad, fisher_draws=m.fisher_draws, mode=c.mode, n_images=c.n_images,
               batch_size=c.batch_size, chunk_mb=float(c.chunk_mb) if c.chunk_mb else None,
               capture_mb=float(c.capture_mb), fast_paths=bool(c.fast_paths), seed=c.seed, search=search, load=q.load,
               first_last=first_last)
    # the plug-in stages' groups (recon), each resolved by its plug-in
    own.update({s.plugin.group: s.plugin.resolve(cfg[s.plugin.group]) for s in plugins()})
    for s in plugins():   # a plug-in that refuses some recipe orders (compensation before AdaLog's fold_shift)
        if s.plugin.check_recipe is not None:
            s.plugin.check_recipe(own[s.plugin.group], list(recipe))
    missing = sorted({f.name for f in dataclasses.fields(PTQConfig)} - set(own))
    if missing:
        raise RuntimeError(f"no plug-in stage registered for the config group {missing[0]}; import ptq.plugins "
                           f"(it registers the plug-in stages) before resolving a config")
    return PTQConfig(**own)
