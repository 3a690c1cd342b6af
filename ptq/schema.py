"""The typed schema of `conf/config.yaml`: every key of every config group and its default, stated once (value
ranges and cross-field rules: ptq/validation.py, beside it).

Registered in Hydra's ConfigStore as `config_schema` and placed first in config.yaml's defaults list, so every
YAML file and every command-line override is merged into these dataclasses: a misspelt or unknown key anywhere is
an error naming it, and a value of the wrong type (`seed=abc`) is refused while composing. YAML presets state only
what differs from these defaults (conf/quantizer/base_ptq.yaml, ptq4vit_log2.yaml).

The quantizer defaults are the lab's base method, PTQ4ViT (paper form); `QuantizerConfig.slots` names, per
operand slot, the quantizer, its granularity and its options (ptq/quant/slots.py says where each slot sits in a
model).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ptq.models.outliers import OutliersConfig


def choice(default: str, choices: tuple[str, ...]):
    """A string field with a fixed vocabulary: ptq/validation.py makes its rule from `choices` (one list)."""
    return field(default=default, metadata={"choices": choices})


@dataclass
class ModelConfig:
    name: str = MISSING                                       # timm model name (test-bed names are registered)
    kwargs: dict[str, Any] = field(default_factory=dict)     # passed to timm.create_model
    pretrained: bool = False                                 # timm's pretrained weights (hub or cache)
    checkpoint: str | None = None                         # a local state dict; wins over pretrained
    outliers: OutliersConfig = field(default_factory=OutliersConfig)  # stress profile (conf/model/outliers/)


@dataclass
class DataConfig:
    """One schema for every data set; a loader reads the keys it needs (fmnist: root, download, max_test)."""

    name: str = MISSING                                      # fmnist | imagenet
    root: str | None = None
    download: bool = True                                    # fmnist: torchvision download when missing
    train_split: str = "train"                               # image folders: calibration images
    val_split: str = "val"                                   # image folders: evaluation images
    workers: int = 8                                         # image folders: DataLoader workers
    max_test: int | None = None                           # evaluate on the first N test images (null = all)
    transform: dict[str, Any] = field(default_factory=dict)  # image folders: overrides of timm's eval transform
    on_bad_file: str = choice("error", ("error", "skip"))   # image folders: error (names the file) | skip


@dataclass
class MetricConfig:
    name: str = MISSING              # a registered metric (ptq/metrics/)
    grad: str | None = None       # gradient source of the Hessian metric; null: from quantizer.compat
    fisher_draws: int = 4            # labels sampled per image for grad=fisher


@dataclass
class BitsConfig:
    w: int = MISSING                 # weight bits (every weight slot unless it sets its own `bits`)
    a: int = MISSING                 # activation bits (every activation slot unless it sets its own `bits`)
    first_last: int | None = None    # bits of the patch embedding, head and their inputs (ptq/quant/first_last.py)


CALIB_MODES = ("parallel", "sequential")  # calib.mode (ptq/quant/calibrate.py runs both)
CALIB_TRANSFORMS = ("eval", "train")       # calib.transform (ptq/data/dataset.py)


@dataclass
class CalibConfig:
    n_images: int = 32               # calibration images from the train split
    seed: int = 3                    # RandomState(seed).permutation(len(train))[:n_images] (reference seed 3)
    # parallel: float inputs for every layer | sequential: quantized layers before
    mode: str = choice("parallel", CALIB_MODES)
    batch_size: int = 8              # images per forward/backward while capturing (bounds autograd memory)
    chunk_mb: float | None = None  # memory bound of one chunk of candidate outputs; null: 8 (CPU), 1024 (CUDA)
    capture_mb: float = 4096.0       # memory bound of the activations captured at once
    fast_paths: bool = True          # exact shortcuts (mse on linear weights via Gram matrices)
    # eval: the model's eval transform | train: a train-time augmentation, drawn once with calib.seed (AdaLog's
    # reference: transform=train, seed=5)
    transform: str = choice("eval", CALIB_TRANSFORMS)


@dataclass
class SlotConfig:
    """How one operand slot is quantized."""

    quantizer: str | None = "uniform"   # a registered quantizer (ptq/quantizers/); null: the operand stays float
    granularity: str = "tensor"            # tensor | channel | block (qkv weights) | head (matmul operands)
    enabled: bool = True                   # false: the operand uses its parent slot (e.g. softmax -> matmul)
    bits: int | None = None             # null: bits.w for weight slots, bits.a for the others
    form: str | None = None             # paper | official arithmetic of the quantizer; null: quantizer.compat
    partner: str | None = None          # the other operand during this slot's search: quantized | float;
    #                                        null: what the quantizer declares for quantizer.compat
    options: dict[str, Any] = field(default_factory=dict)  # this slot's quantizer's own options (its OPTIONS)


def _slot(quantizer: str | None = "uniform", granularity: str = "tensor", enabled: bool = True):
    return field(default_factory=lambda: SlotConfig(quantizer=quantizer, granularity=granularity, enabled=enabled))


@dataclass
class SlotsConfig:
    """Every operand slot (ptq/quant/slots.py: where it sits in the model, its parent, its granularities).
    Defaults: PTQ4ViT. A child slot with `enabled: false` falls back to its parent."""

    weight: SlotConfig = _slot("uniform", "tensor")            # linear weights
    qkv_weight: SlotConfig = _slot("uniform", "block")         # -> weight: attn.qkv (block: q, k, v scales)
    head_weight: SlotConfig = _slot("uniform", "tensor", enabled=False)   # -> weight: the classifier head
    conv_weight: SlotConfig = _slot("uniform", "channel")      # -> weight: the patch-embedding conv
    input: SlotConfig = _slot("uniform", "tensor")             # linear inputs
    ln_input: SlotConfig = _slot("uniform", "tensor", enabled=False)      # -> input: qkv, fc1, Swin reduction
    gelu: SlotConfig = _slot("twin_gelu", "tensor")            # -> input: fc2 (post-GELU)
    head_input: SlotConfig = _slot("uniform", "tensor", enabled=False)    # -> input: the classifier head
    image: SlotConfig = _slot(None, "tensor")                  # the patch-embedding input (float by default)
    matmul: SlotConfig = _slot("uniform", "head")              # q, k of q @ k^T and v of attn @ v
    softmax: SlotConfig = _slot("twin_softmax", "tensor")      # -> matmul: the probabilities of attn @ v


@dataclass
class SearchConfig:
    """The candidate grid of searched quantizers: Delta_i = (alpha + i (beta - alpha) / n) Delta_0."""

    alpha: float = 0.01
    beta: float = 1.2
    n: int = 100
    rounds: int = 3                  # rounds alternating over the operands of each op
    include_beta: bool | None = None  # i = 0..n (paper) or 0..n-1 (official); null: from quantizer.compat

    def grid(self) -> list[float]:
        """Candidate multipliers of the initial scale (include_beta resolved)."""
        if self.include_beta is None:
            raise ValueError("SearchConfig.include_beta is unresolved (null); resolve_ptq_config sets it from compat")
        last = self.n + 1 if self.include_beta else self.n
        return [self.alpha + i * (self.beta - self.alpha) / self.n for i in range(last)]


@dataclass
class QuantizerConfig:
    name: str = MISSING              # the method's name (its conf/quantizer/<name>.yaml)
    enabled: bool = True             # false: the float model
    compat: str = "paper"            # paper: as published | official: the reference implementation's arithmetic
    recipe: list[str] = field(default_factory=lambda: ["init_minmax", "search"])  # stages (ptq/quant/recipe.py)
    slots: SlotsConfig = field(default_factory=SlotsConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    load: str | None = None       # a saved quant_params.safetensors: evaluate without recalibrating


@dataclass
class ReconConfig:
    """Block reconstruction after the method's recipe (ptq/recon/, conf/recon/): per unit, learn the weights'
    rounding (AdaRound) and the activation step sizes (LSQ) so the quantized unit reproduces the float one."""

    name: str = "none"               # none (no reconstruction) | brecq | qdrop | adalog (conf/recon/<name>.yaml)
    unit: str = "block"              # block: patch embedding, transformer blocks, patch merging, head | layer
    iters: int = 300                 # optimization steps per unit (0: the calibrated model, unchanged)
    batch_size: int = 32             # images per step, a fresh random draw each step
    n_images: int = 1024             # train images after the calibration ones in the calib.seed permutation
    inputs: str = "quantized"        # unit inputs: quantized (the quantized model's, BRECQ) | float (AdaLog)
    target: str = "float"            # float: the float model as the stages before left it | original: the model as
    #                                  built, before MLP reconstruction (the APHQ-ViT code's: its float inputs, outputs
    #                                  and loss statistics come from an untouched copy of the GELU model)
    loss: str = "mse"                # the unit-output loss, ptq/recon/losses/: mse | fisher (BRECQ) | aph (APHQ-ViT)
    #                                  | fisher_dplr (FIMA-Q) | fisher_dplr_official (FIMA-Q's code); what each
    #                                  computes: ptq/recon/losses/SPEC.md
    loss_rank: int = 5               # fisher_dplr: rank of the low-rank part (FIMA-Q's k = 5); _official: refreshes
    loss_draws: int = 4              # aph: perturbation directions averaged per image
    loss_direction: str = "rademacher"   # aph: rademacher (a diagonal estimate) | ones (the reference code's)
    loss_eps: float = 1e-3           # aph: finite-difference step along each direction (the reference: 1e-6)
    loss_temp: float = 20.0          # aph, fisher_dplr_official: temperature of the KL (both references: 20)
    head_loss: str = "mse"           # the classifier head's loss: mse | kl (KL(float || quantized) of the softmax)
    rec_scale: float = 1.0           # factor of the output loss (sum over dim 1, mean over the others)
    rec_norm: str = "none"           # none | first: the output loss divided by its first step's value, times 2, per
    #                                  unit (the APHQ-ViT code's block reconstruction: it starts at 2 in every unit)
    learn_rounding: bool = True      # learn the rounding of weights whose quantizer declares learnable_rounding
    learn_step: bool = True          # learn the step of activation quantizers that declare learnable_step
    lr_rounding: float = 1e-2        # Adam learning rate of the rounding variables
    lr_step: float = 4e-5            # Adam learning rate of the step sizes, cosine-annealed to 0
    reg_lambda: float = 0.01         # weight of the rounding regularizer sum(1 - |2h - 1|^b)
    warmup: float = 0.2              # fraction of the steps without the regularizer
    b_start: float = 20.0            # the regularizer's exponent b, annealed linearly after warm-up ...
    b_end: float = 2.0               # ... down to this value at the last step
    drop_prob: float = 0.0           # QDrop: probability of keeping an activation float during optimization
    eval_images: int = 256           # images on which each unit's output MSE is measured before and after
    compile: bool = False            # torch.compile the step (forward, loss, backward; fused Adam): faster, not
    #                                  bit-identical (fused sums); one compile per unit structure (ptq/recon/step.py)
    precision: str = "float32"       # float32 | bfloat16: the step's matmuls under bf16 autocast (changes results)


@dataclass
class MLPReconConfig:
    """MLP reconstruction before calibration (APHQ-ViT, CVPR'25; ptq/recon/mlp.py, conf/mlp_recon/, SPEC:
    ptq/recon/MLP_SPEC.md): in every transformer block's MLP, GELU -> ReLU, and fc1 / fc2 distilled to the float
    GELU MLP on the reconstruction images. The defaults are the reference code's (github GoatWu/APHQ-ViT)."""

    name: str = "none"               # none (off) | aphq | aphq_official (conf/mlp_recon/<name>.yaml)
    iters: int = 20000               # Adam steps per MLP (0: ReLU swap only, no distillation)
    batch_size: int = 32             # images per step, a fresh random draw each step
    lr: float = 4.0e-5               # Adam learning rate of fc1 / fc2 weights and biases, cosine-annealed to 0
    loss: str = "aph"                # a recon.loss (ptq/recon/losses/) on the MLP output: mse | fisher | aph | ...
    loss_rank: int = 5               # as recon.loss_rank (fisher_dplr)
    loss_draws: int = 4              # as recon.loss_draws (aph)
    loss_direction: str = "rademacher"   # as recon.loss_direction (aph): rademacher | ones (the reference's)
    loss_eps: float = 1e-3           # as recon.loss_eps (aph; the reference: 1e-6)
    loss_temp: float = 20.0          # as recon.loss_temp (aph: the KL's temperature)
    rec_scale: float = 0.1           # factor of the output loss (the reference's 1/10)
    clamp_weight: float = 2.0        # weight of the second term: the output with fc2's input clamped to [0, ub]
    clamp_pct: float | None = None   # ub = this quantile of the float fc2 input's positive values; null: the
    #                                  reference's configs, 0.99 at bits.a=3, else 0.98
    eval_images: int = 256           # images on which each MLP's output error is measured before and after


@dataclass
class CompensateConfig:
    """Closed-form compensation after the method (and reconstruction): per transformer block, a map fitted by least
    squares to what quantization changed in the block's output (ptq/compensate/, conf/compensate/,
    ptq/compensate/SPEC.md). Nulls are resolved from `compat`."""

    name: str = "none"               # none | qwt (x @ W + b side path) | qwt_v2 (per-channel affine on the output)
    #                                  | erq (per-layer ridge weight update and rounding refinement)
    compat: str = "paper"            # paper | official: the released QwT code's departures (SPEC.md)
    n_images: int = 512              # train images the maps are fitted on (all their tokens)
    augmentation: str | None = None  # none | train (crop, flip, RandAugment m9; SPEC.md); null: paper none,
    #                                  official train
    seed: int | None = None          # seed of the augmentation draw; null: calib.seed
    distinct: bool = True            # true: the images after the calibration (and reconstruction) images of the
    #                                  calib.seed permutation; false: its first n_images (overlapping calibration)
    ridge: float | None = None       # lambda on the per-token second moment (bias not penalized); null: paper
    #                                  1e-3, official 0 (QwT as released)
    solver: str | None = None        # solve64 (float64 normal equation, solved) | inverse32 (float32 inverse, the
    #                                  reference's); null: paper solve64, official inverse32
    r2_gate: float = 0.0             # a block's map is kept only if its R^2 on the fitted data is above this
    precision: str = "fp16"          # the side path's matmul at inference: fp16 (QwT's) | fp32; never quantized
    blocks: list[str] = field(default_factory=lambda: ["all"])  # all | block names (blocks.0) or indices (0)
    batch_size: int = 32             # images per forward while capturing block inputs and outputs
    # ERQ (compensate=erq; ptq/compensate/erq.py, SPEC.md): ridge weights lambda = 0.1 * coe on the raw Gram of a
    # layer's token input, head_lambda for a pooled (head) input, conv_lambda (null: coe) in the patch embedding's
    # second step; the rounding refinement's iterations and rows per group (memory only)
    coe: float = 20000.0
    head_lambda: float = 0.1
    conv_lambda: float | None = None
    iterations: int = 100
    rows_per_group: int = 500
    # ERQ's two-part weight quantizer of qkv / fc1 (ptq/compensate/two_part.py): the input columns most often beyond
    # a row's two_part_percentile (positive) / 100 - it (negative) get their own per-row scales, out_features //
    # two_part_rows_per_column of them (the released code's 99 and 20); null: official true, paper false
    two_part: bool | None = None
    two_part_percentile: float = 99.0
    two_part_rows_per_column: int = 20


@dataclass
class LoggerConfig:
    name: str = MISSING              # none | wandb
    project: str = "ptq-vit"
    entity: str | None = None
    mode: str | None = None       # online | offline | disabled (conf/logger/wandb.yaml: from WANDB_MODE)
    group: str | None = None      # null: the sweep folder's name in multiruns
    tags: list[str] = field(default_factory=list)
    log_params: bool = True          # upload the calibrated parameters as an artifact


@dataclass
class EvalConfig:
    batch_size: int = 256


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    bits: BitsConfig = field(default_factory=BitsConfig)
    calib: CalibConfig = field(default_factory=CalibConfig)
    mlp_recon: MLPReconConfig = field(default_factory=MLPReconConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)
    compensate: CompensateConfig = field(default_factory=CompensateConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    task_name: str = "ptq"
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda
    eval: EvalConfig = field(default_factory=EvalConfig)
    force: bool = False              # re-run even when results.json with the same config exists
    progress: bool = True
    threads: int | None = None    # torch threads per job (null: available cores // jobs run at once by joblib)


@dataclass
class TrainSettings:
    """`python -m ptq.train` (conf/train.yaml): the test-bed models' training schedule."""

    epochs: int = 12
    batch_size: int = 128
    lr: float = 2.0e-3
    min_lr: float = 1.0e-5
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    augment: bool = False            # random 2-px shift + horizontal flip
    seed: int = 0
    threads: int | None = None       # torch threads (null = torch default)
    out: str = MISSING               # where the trained state dict goes


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    calib: CalibConfig = field(default_factory=CalibConfig)


def register() -> None:
    ConfigStore.instance().store(name="config_schema", node=Config)
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


register()
