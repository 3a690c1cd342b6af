"""`PTQConfig`: the fully resolved description of one quantization method (torchao style: a config object per
method, applied by `quantize_model`), as the stages and the engine read it. Built by `resolve_ptq_config`
(ptq/quant/config.py); a plain record that imports nothing above it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ptq.quant.slots import SlotSpec
from ptq.schema import CompensateConfig, MLPReconConfig, ReconConfig, SearchConfig


@dataclass
class PTQConfig:
    """A resolved method. No defaults here: every value comes from the composed config (`resolve_ptq_config`)."""

    name: str
    enabled: bool
    compat: str
    w_bits: int
    a_bits: int
    recipe: list[str]
    slots: dict[str, SlotSpec]       # every slot of ptq/quant/slots.py, resolved to the spec its operands use
    metric: str
    grad: str
    fisher_draws: int
    mode: str
    n_images: int
    batch_size: int
    chunk_mb: float | None
    capture_mb: float
    fast_paths: bool
    seed: int
    search: SearchConfig
    load: str | None
    recon: ReconConfig               # block reconstruction after the recipe (name none: off)
    compensate: CompensateConfig     # closed-form compensation after that (name none: off)
    first_last: int | None = None    # bits.first_last (ptq/quant/first_last.py); None: off
    mlp_recon: MLPReconConfig = field(default_factory=MLPReconConfig)   # MLP reconstruction before the recipe

    def to_dict(self) -> dict:
        return asdict(self)
