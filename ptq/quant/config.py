"""`PTQConfig`: the fully resolved description of one quantization method (torchao style: a config object per
method, applied by `quantize_model`). Built from the Hydra `quantizer`, `metric`, `bits` and `calib` groups;
every `null` there is resolved here from `compat` (paper | official), so results record concrete values.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from omegaconf import DictConfig

from ptq.errors import PTQError, choices

COMPAT = ("paper", "official")
GRAD_SOURCES = ("kl_self", "kl_quant", "pseudo_ce", "label_ce", "fisher")
# Default gradient source of the Hessian metric in paper mode; chosen from the test-bed measurements in
# experiments/benchmark_testbed.md (see README "Gradient source").
PAPER_DEFAULT_GRAD = "fisher"
MIN_BITS, MAX_BITS = 2, 16


@dataclass
class SearchConfig:
    alpha: float = 0.01
    beta: float = 1.2
    n: int = 100
    rounds: int = 3
    include_beta: bool = True
    softmax_m_max: int = 19
    split_v: str = "quantized"  # quantized | float

    def grid(self) -> list[float]:
        """Candidate multipliers of the initial scale: alpha + i (beta - alpha) / n."""
        last = self.n + 1 if self.include_beta else self.n
        return [self.alpha + i * (self.beta - self.alpha) / self.n for i in range(last)]


@dataclass
class PTQConfig:
    name: str = "ptq4vit"
    enabled: bool = True
    compat: str = "paper"
    w_bits: int = 8
    a_bits: int = 8
    weight_quantizer: str = "uniform"
    act_quantizer: str = "uniform"
    softmax_quantizer: str = "twin_softmax"   # the post-softmax operand of attn @ v
    gelu_quantizer: str = "twin_gelu"         # the post-GELU input of fc2
    softmax_form: str = "paper"               # paper | official (twin softmax)
    gelu_form: str = "paper"                  # paper | official (twin GELU)
    weight_granularity: str = "tensor"        # tensor | channel (linears)
    qkv_granularity: str = "block"            # block | tensor | channel
    conv_granularity: str = "channel"         # tensor | channel (patch embedding)
    quant_input_image: bool = False
    metric: str = "hessian"
    grad: str = "pseudo_ce"
    fisher_draws: int = 4
    mode: str = "parallel"                    # parallel | sequential
    n_images: int = 32
    batch_size: int = 8
    chunk_mb: float | None = None             # None: by device (8 MB on CPU, 1 GB on CUDA)
    capture_mb: float = 4096.0
    fast_paths: bool = True                   # exact algebraic shortcuts (ptq/quant/fast_paths.py)
    seed: int = 3
    search: SearchConfig = field(default_factory=SearchConfig)
    load: str | None = None
    extra: dict = field(default_factory=dict)  # method-specific keys a user's quantizer YAML adds

    def to_dict(self) -> dict:
        return asdict(self)


KNOWN_QUANTIZER_KEYS = {"name", "enabled", "compat", "twin_softmax", "twin_gelu", "weight_quantizer",
                        "act_quantizer", "softmax_quantizer", "gelu_quantizer", "weight_granularity",
                        "qkv_granularity", "conv_granularity", "quant_input_image", "softmax_form", "gelu_form",
                        "search", "load"}


def _pick(value, paper, official, compat):
    return value if value is not None else (paper if compat == "paper" else official)


def _check(name: str, value, valid) -> None:
    if value not in valid:
        raise PTQError(f"unknown {name}={value}; valid: {choices(valid)}")


def resolve_ptq_config(cfg: DictConfig) -> PTQConfig:
    """Validate and resolve the method described by `cfg` (raises PTQError naming the bad value)."""
    from ptq.metrics import METRICS
    from ptq.quantizers import QUANTIZERS

    q, m, b, c = cfg.quantizer, cfg.metric, cfg.bits, cfg.calib
    compat = q.get("compat", "paper")
    _check("quantizer.compat", compat, COMPAT)
    for key, v in (("bits.w", b.w), ("bits.a", b.a)):
        if not isinstance(v, int) or isinstance(v, bool) or not MIN_BITS <= v <= MAX_BITS:
            raise PTQError(f"impossible bit width {key}={v}; valid: integers {MIN_BITS}..{MAX_BITS}")
    _check("metric", m.name, METRICS)
    grad = _pick(m.get("grad"), PAPER_DEFAULT_GRAD, "kl_self", compat)
    _check("metric.grad", grad, GRAD_SOURCES)
    _check("calib.mode", c.get("mode", "parallel"), ("parallel", "sequential"))
    n_images = c.get("n_images", 32)
    if not isinstance(n_images, int) or n_images < 1:
        raise PTQError(f"calib.n_images={n_images} is impossible; valid: an integer >= 1 (at most the train split)")
    base = dict(name=q.name, enabled=bool(q.get("enabled", True)), compat=compat, w_bits=b.w, a_bits=b.a,
                metric=m.name, grad=grad, fisher_draws=int(m.get("fisher_draws", 4)), mode=c.get("mode", "parallel"),
                n_images=n_images, batch_size=int(c.get("batch_size", 8)),
                chunk_mb=(float(c["chunk_mb"]) if c.get("chunk_mb") else None),
                capture_mb=float(c.get("capture_mb", 4096)),
                fast_paths=bool(c.get("fast_paths", True)), seed=int(c.get("seed", 3)), load=q.get("load"))
    if not base["enabled"]:
        return PTQConfig(**base)
    s = q.get("search", {}) or {}
    search = SearchConfig(alpha=float(s.get("alpha", 0.01)), beta=float(s.get("beta", 1.2)), n=int(s.get("n", 100)),
                          rounds=int(s.get("rounds", 3)),
                          include_beta=bool(_pick(s.get("include_beta"), True, False, compat)),
                          softmax_m_max=int(s.get("softmax_m_max", 19)),
                          split_v=_pick(s.get("split_v"), "quantized", "float", compat))
    if search.n < 1 or search.rounds < 1 or not 0 < search.alpha <= search.beta:
        raise PTQError(f"impossible search settings alpha={search.alpha} beta={search.beta} n={search.n} "
                       f"rounds={search.rounds}; valid: 0 < alpha <= beta, n >= 1, rounds >= 1")
    _check("quantizer.search.split_v", search.split_v, ("quantized", "float"))
    softmax_q = q.get("softmax_quantizer", "twin_softmax") if q.get("twin_softmax", True) else q.get(
        "act_quantizer", "uniform")
    gelu_q = q.get("gelu_quantizer", "twin_gelu") if q.get("twin_gelu", True) else q.get("act_quantizer", "uniform")
    pc = PTQConfig(**base, weight_quantizer=q.get("weight_quantizer", "uniform"),
                   act_quantizer=q.get("act_quantizer", "uniform"), softmax_quantizer=softmax_q, gelu_quantizer=gelu_q,
                   softmax_form=_pick(q.get("softmax_form"), "paper", "official", compat),
                   gelu_form=_pick(q.get("gelu_form"), "paper", "official", compat),
                   weight_granularity=q.get("weight_granularity", "tensor"),
                   qkv_granularity=q.get("qkv_granularity", "block"),
                   conv_granularity=q.get("conv_granularity", "channel"),
                   quant_input_image=bool(q.get("quant_input_image", False)), search=search,
                   extra={k: v for k, v in q.items() if k not in KNOWN_QUANTIZER_KEYS})
    for key in ("weight_quantizer", "act_quantizer", "softmax_quantizer", "gelu_quantizer"):
        _check(f"quantizer.{key}", getattr(pc, key), QUANTIZERS)
    _check("quantizer.softmax_form", pc.softmax_form, COMPAT)
    _check("quantizer.gelu_form", pc.gelu_form, COMPAT)
    _check("quantizer.weight_granularity", pc.weight_granularity, ("tensor", "channel"))
    _check("quantizer.qkv_granularity", pc.qkv_granularity, ("tensor", "block", "channel"))
    _check("quantizer.conv_granularity", pc.conv_granularity, ("tensor", "channel"))
    return pc
