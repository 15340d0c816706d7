"""The sections of params.yaml that the model library's training and evaluation read: features, the denoiser's
two training stages, the Combiner baseline and the benchmark (frozen dataclasses; the loader and the root
schema are ``orchestration.params``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from compodiff.config_schema import at_least


@dataclass(frozen=True)
class FeaturesConfig:
    """Pre-extracted CLIP image features (paper 5.1: image features pre-extracted, text on the fly)."""

    masks: str  # Eq. (2) masks: "world" (the renderer's exact object masks) or "clipseg:<dir or hub id>"
    mask_noise_std: float  # Gaussian noise put in the masked region before encoding, in 0..255 pixel units
    batch_size: int


@dataclass(frozen=True)
class StageConfig:
    steps: int = field(metadata=at_least(1))
    batch_size: int = field(metadata=at_least(1))  # global batch (split across processes under torchrun)
    lr: float = field(metadata=at_least(0, above=True))
    warmup_steps: int = field(metadata=at_least(0))
    mix: tuple[float, float, float]  # Eq. (1) / Eq. (2) / Eq. (3) shares (stage 1: 1, 0, 0)
    # triplets drawn with weight count(edit kind)^-kind_balance: 0 uniform, 1 every kind equally often;
    # needs the triplets' edit kinds (the world's ground truth), else uniform
    kind_balance: float = 0.0
    # stage 2 starts from these weights (a denoiser .safetensors, relative to the project root) instead of
    # stage 1's: Appendix B fine-tunes the zero-shot stage-2 model on a benchmark's training split
    init: str | None = None


@dataclass(frozen=True)
class BidirectionalConfig:
    """Reversed triplets (target + reversed instruction -> reference) with weight alpha (BLIP4CIR+Bi)."""

    enabled: bool
    alpha: float
    reverse_prefix: str  # direction prefix for instructions that cannot be reversed exactly (LLM triplets)


@dataclass(frozen=True)
class TrainingConfig:
    denoiser: str  # preset of compodiff.denoiser.PRESETS
    threads: int
    condition_dropout: float  # each condition dropped with this probability, except the mask
    weight_decay: float
    ema_decay: float
    grad_clip: float
    bf16: bool  # autocast (GPU, or CPU where supported)
    checkpoint_every: int = field(metadata=at_least(1))
    text_cache: int  # distinct texts whose token states are kept between steps (0: none)
    stage1: StageConfig
    stage2: StageConfig
    bidirectional: BidirectionalConfig


@dataclass(frozen=True)
class CombinerConfig:
    """CLIP4Cir's Combiner over frozen CLIP features, trained contrastively on the same triplets."""

    projection_dim: int
    hidden_dim: int
    dropout: float
    logit_scale: float
    steps: int
    batch_size: int
    lr: float


@dataclass(frozen=True)
class BenchmarkConfig:
    """The world benchmark, its index, and the sampling settings of the CompoDiff queries."""

    queries_per_type: int
    true_targets: int  # renderings of each edited scene in the gallery
    distractors: int
    index: str  # flat | ivfpq | hnsw (compodiff.retrieval.IndexSpec)
    w_image: float
    w_text: float
    steps: int
    mix_reference: float  # (1 - s) target + s reference (the release's demo: 0.1; 0.05 with a mask)
    topk: int
    # stage 2 must beat every baseline for benchmark_metrics to pass (a blocking check); false makes a loss
    # a warning, for the tiny wiring profile whose models are barely trained
    require_stage2_lead: bool = True
    eta: float = 1.0  # DDIM noise: 1 the release's sampler, 0 deterministic DDIM
