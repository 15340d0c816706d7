"""Where each step writes: one place, read by the Dagster assets, the CLI and dvc.yaml's tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestration.params import Params


@dataclass(frozen=True)
class Layout:
    root: Path
    params: Params

    @property
    def data(self) -> Path:
        return self.root / self.params.data_dir

    @property
    def metrics(self) -> Path:
        return self.root / self.params.metrics_dir

    def world_pairs(self, shard: str) -> Path:
        return self.data / "world_pairs" / f"{shard}.parquet"

    @property
    def encoder_dir(self) -> Path:
        return self.data / "encoder"

    @property
    def encoder_heldout(self) -> Path:
        return self.encoder_dir / "heldout.parquet"

    @property
    def encoder_metrics(self) -> Path:
        return self.metrics / "encoder.json"

    # --- caption triplets (paper 4.1-4.2) ---
    @property
    def caption_pool(self) -> Path:
        return self.data / "caption_pool"

    def keyword_triplets(self, shard: str) -> Path:
        return self.data / "keyword_triplets" / f"{shard}.parquet"

    @property
    def llm_dir(self) -> Path:
        return self.data / "llm"

    @property
    def llm_triplets(self) -> Path:
        return self.data / "llm_triplets.parquet"

    @property
    def caption_triplets(self) -> Path:
        return self.data / "caption_triplets.parquet"

    @property
    def caption_triplets_metrics(self) -> Path:
        return self.metrics / "caption_triplets.json"

    # --- image pairs and CLIP filtering (paper 4.3-4.4) ---
    def image_pairs(self, shard: str) -> Path:
        return self.data / "image_pairs" / f"{shard}.parquet"

    @property
    def filtered_triplets(self) -> Path:
        return self.data / "filtered_triplets"

    @property
    def filter_metrics(self) -> Path:
        return self.metrics / "filter.json"

    # --- public triplet datasets (datagen.image_triplets) ---
    def image_triplets(self, source: str) -> Path:
        return self.data / "image_triplets" / source

    # --- features and training (paper 3.2, 5.1) ---
    def pair_features(self, shard: str) -> Path:
        return self.data / "pair_features" / f"{shard}.npz"

    @property
    def triplet_features(self) -> Path:
        return self.data / "triplet_features.npz"

    def stage_dir(self, stage: str) -> Path:
        """stage1, stage2, combiner: final weights, training state, manifest."""
        return self.data / stage

    @property
    def training_metrics(self) -> Path:
        return self.metrics / "training.json"

    @property
    def combiner_metrics(self) -> Path:
        return self.metrics / "combiner.json"

    # --- evaluation (paper 5) ---
    @property
    def world_benchmark(self) -> Path:
        return self.data / "world_benchmark"

    @property
    def world_benchmark_exports(self) -> Path:
        """The benchmark in the official FashionIQ / CIRR / CIRCO / GeneCIS file formats."""
        return self.world_benchmark / "exports"

    @property
    def gallery_features(self) -> Path:
        return self.data / "gallery_features.npz"

    @property
    def faiss_index(self) -> Path:
        return self.data / "faiss_index" / "gallery.faiss"

    @property
    def benchmark_metrics(self) -> Path:
        return self.metrics / "benchmark.json"

    @property
    def benchmark_checks(self) -> Path:
        return self.metrics / "benchmark_checks.json"

    @property
    def headline(self) -> Path:
        """The few figures `dvc metrics show` and `dvc exp show` list: each method's world mAP@10."""
        return self.metrics / "headline.json"

    @property
    def ablations(self) -> Path:
        return self.metrics / "ablations.json"

    @property
    def plots(self) -> Path:
        return self.metrics / "plots"
