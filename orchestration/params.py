"""The project's parameters: params.yaml loaded into frozen dataclasses, strictly.

Each package holds the sections it reads (``datagen.config``, ``compodiff.config``); this module holds the
orchestration's own (the encoder every step uses, the asset-check thresholds, the ablations, the lifecycle's
lanes, MLflow) and the root that composes them. params.yaml is the resolved profile (``compodiff profile``);
the other profiles under ``profiles/`` are overlays (``compodiff.profiles``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from compodiff.config import BenchmarkConfig, CombinerConfig, FeaturesConfig, TrainingConfig
from compodiff.config_schema import ConfigError, at_least, flatten, from_dict, to_dict
from datagen.config import (
    CaptionTripletsConfig,
    ClipFilterConfig,
    EncoderTrainConfig,
    ImagePairsConfig,
    SourcesConfig,
    TripletSourcesConfig,
    WorldConfig,
)

PARAMS_ENV = "COMPODIFF_PARAMS"


@dataclass(frozen=True)
class EncoderConfig:
    """Which CLIP every step encodes with: an open_clip name (``ViT-L-14`` + ``openai``),
    a file path in ``pretrained``, or ``local-dir:PATH`` for a model saved by this project."""

    model: str
    pretrained: str | None = None
    train: EncoderTrainConfig | None = None  # set when the pipeline trains its own encoder


@dataclass(frozen=True)
class ChecksConfig:
    """Thresholds of the Dagster asset checks (orchestration/checks.py) that are not a step's own setting."""

    encoder_min_t2i_recall_at_10: float  # blocking: a lower held-out recall means the encoder broke
    llm_min_consistent_fraction: float  # warning: LLM triplets whose target follows the instruction
    llm_max_top_edit_kind_share: float  # warning: no edit kind above this share of the LLM triplets
    negative_max_share_ratio: float  # warning: negated-object share with / without the negative text


@dataclass(frozen=True)
class AblationsConfig:
    steps: tuple[int, ...]  # sampling steps (Table 4)
    w_image: tuple[float, ...]  # guidance sweep (Fig. 10)
    w_text: tuple[float, ...]
    train_steps: int  # length of the short stage-2 runs of the training ablations (0: not run)
    triplet_fractions: tuple[float, ...]  # triplet-set scale (Table 6)
    alphas: tuple[float, ...]  # bi-directional weight


@dataclass(frozen=True)
class LifecycleConfig:
    """Steps at once in the lifecycle's one Dagster run (tag concurrency limits of its multiprocess executor)."""

    main: int = field(default=1, metadata=at_least(1))  # the main chain: the world CLIP, features, training
    side: int = field(default=1, metadata=at_least(1))  # beside it: the caption LM and the benchmark renderer


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str  # MLflow; relative sqlite paths resolve against the project root
    experiment: str


@dataclass(frozen=True)
class Params:
    profile: str
    seed: int
    data_dir: str
    metrics_dir: str
    world: WorldConfig
    encoder: EncoderConfig
    caption_triplets: CaptionTripletsConfig
    image_pairs: ImagePairsConfig
    clip_filter: ClipFilterConfig
    features: FeaturesConfig
    training: TrainingConfig
    combiner: CombinerConfig
    benchmark: BenchmarkConfig
    ablations: AblationsConfig
    checks: ChecksConfig
    tracking: TrackingConfig
    sources: SourcesConfig | None = None  # paper profiles: the real datasets
    triplet_sources: TripletSourcesConfig = TripletSourcesConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()

    def flat(self) -> dict:
        return flatten(to_dict(self))

    def digest(self) -> str:
        """Stable hash of the resolved parameters (tagged on every MLflow run)."""
        blob = json.dumps(to_dict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def params_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get(PARAMS_ENV) or "params.yaml")


def load_params(path: str | os.PathLike | None = None) -> Params:
    from compodiff.profiles import resolve

    p = params_path(path)
    if not p.is_file():
        raise ConfigError(f"params file not found: {p.resolve()}")
    return from_dict(Params, resolve(p), source=str(p))  # a profile overlay resolves through its chain


__all__ = ["ConfigError", "Params", "load_params", "params_path"]
