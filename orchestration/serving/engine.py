"""What the service answers with: the stage-2 pipeline, the FAISS index and the gallery it indexes,
loaded once and checked against each other at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compodiff.errors import InputError
from compodiff.pipeline import TextConditions


class StartupError(InputError):
    pass


@dataclass
class Query:
    """One composed query: a reference (an embedding from the gallery, or an uploaded image), the text,
    and the sampler's settings."""

    instruction: str
    negative: str
    w_image: float
    w_text: float
    steps: int
    k: int
    gallery_id: int | None = None
    image: np.ndarray | None = None  # (H, W, 3) uint8, when uploaded
    mask: np.ndarray | None = None  # (H, W) bool over the reference image


@dataclass
class Answer:
    ids: list[int]
    scores: list[float]
    baseline_ids: list[int]  # image + text sum, the one-line baseline, for the same query
    baseline_scores: list[float]


class SearchEngine:
    def __init__(self, pipe, index, gallery_png: list[bytes], gallery_embeddings: np.ndarray, encoder_id: str,
                 eta: float, mix_reference: float, seed: int = 0):
        self.pipe, self.index, self.gallery_png = pipe, index, gallery_png
        self.gallery = gallery_embeddings
        self.encoder_id, self.eta, self.mix_reference, self.seed = encoder_id, eta, mix_reference, seed
        self._null = None  # the encoding of "" (see _encode_null)
        cfg = pipe.denoiser.config
        if index.info.dim != cfg.embed_dim or gallery_embeddings.shape[1] != cfg.embed_dim:
            raise StartupError(f"the index holds {index.info.dim}-d and the gallery {gallery_embeddings.shape[1]}-d "
                               f"embeddings, the denoiser composes {cfg.embed_dim}-d ones")
        if index.info.encoder != encoder_id:
            raise StartupError(f"the index was built from {index.info.encoder!r} embeddings; the model's encoder "
                               f"is {encoder_id!r}: rebuild the index (faiss_index step) or serve its model")
        if index.info.size != len(gallery_png):
            raise StartupError(f"the index holds {index.info.size} images, the gallery {len(gallery_png)}")

    def _encode(self, texts: list[str]):
        """The instructions' token states for the denoiser and their pooled embeddings for the baseline, from
        one pass of the text tower: the pooled embedding is the EOT token's state, projected, as open_clip's
        ``encode_text`` computes it (other poolings, a second text encoder or padding hidden inside the
        tower take the two separate passes)."""
        pipe, enc = self.pipe, self.pipe.encoder
        tower = enc._text_tower()
        pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", None))
        if (pipe.denoiser.config.text2_dim or pipe.pad_mask or pool != "argmax" or getattr(tower, "cls_emb", None)
                is not None or getattr(tower, "text_projection", None) is None):
            return pipe.encode_text(texts), enc.encode_text(texts)
        states, real = enc.text_tokens(texts)
        eot = states[torch.arange(len(texts)), real.sum(dim=1) - 1]
        proj = tower.text_projection
        pooled = proj(eot) if isinstance(proj, torch.nn.Linear) else eot @ proj
        return TextConditions(states, None if pipe.attend_padding else real), pooled.float()

    def _encode_null(self, negatives: list[str]):
        """The null-or-negative text of each query; the null text "" is encoded once, at the first query."""
        if self._null is None:
            self._null = self.pipe.encode_text([""])
        if not any(negatives):
            n = self._null
            return TextConditions(n.tokens.expand(len(negatives), -1, -1),
                                  None if n.mask is None else n.mask.expand(len(negatives), -1))
        return self.pipe.encode_text(negatives)

    @property
    def size(self) -> int:
        return len(self.gallery_png)

    @property
    def image_size(self) -> int:
        return self.pipe.encoder.image_size

    @torch.no_grad()
    def search(self, queries: list[Query]) -> list[Answer]:
        """Answers in order; queries with the same sampler settings share one batched denoiser pass."""
        from compodiff.evaluation import sum_query
        from compodiff.search import masked_reference, resize_mask

        ref = np.zeros((len(queries), self.gallery.shape[1]), np.float32)
        uploads = [i for i, q in enumerate(queries) if q.image is not None or q.mask is not None]
        rng = np.random.default_rng(self.seed)
        if uploads:
            from datagen.shards import decode_png

            images = [queries[i].image if queries[i].image is not None
                      else decode_png(self.gallery_png[queries[i].gallery_id]) for i in uploads]
            refs = [masked_reference(im, queries[i].mask, rng) for im, i in zip(images, uploads)]
            ref[uploads] = self.pipe.encoder.encode_images(refs).numpy()
        for i, q in enumerate(queries):
            if i not in uploads:
                ref[i] = self.gallery[q.gallery_id]
        size = self.pipe.denoiser.config.mask_size
        masks = np.stack([np.zeros((size, size), np.float32) if q.mask is None else resize_mask(q.mask, size)
                          for q in queries])
        tokens, text = self._encode([q.instruction for q in queries])
        null = self._encode_null([q.negative for q in queries])
        target = np.zeros_like(ref)
        groups: dict[tuple, list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault((q.w_image, q.w_text, q.steps), []).append(i)
        for (w_image, w_text, steps), rows in groups.items():
            pick = torch.tensor(rows)
            target[rows] = self.pipe.compose_tokens(torch.from_numpy(ref[rows]), tokens.select(pick), null.select(pick),
                                                    masks[rows], w_image=w_image, w_text=w_text, steps=steps,
                                                    seed=self.seed, eta=self.eta,
                                                    mix_reference=self.mix_reference).numpy()
        k = max(q.k for q in queries)
        scores, ids = self.index.search(target, k, self.encoder_id)
        base = sum_query(torch.from_numpy(ref), text).numpy()
        b_scores, b_ids = self.index.search(base, k, self.encoder_id)
        return [Answer(ids[i, :q.k].tolist(), scores[i, :q.k].tolist(), b_ids[i, :q.k].tolist(),
                       b_scores[i, :q.k].tolist()) for i, q in enumerate(queries)]


def load_engine(root: Path, model: str | None = None, precision: str = "fp32") -> SearchEngine:
    """The default run's stage 2 (``model`` None), a checkpoint path, or a registered model
    (``models:/compodiff-stage2@champion``, which brings its own encoder and index), served in
    ``precision`` (compodiff.precision)."""
    from compodiff.checkpoint import load_checkpoint
    from compodiff.encoders import load_encoder
    from compodiff.feature_store import load_features
    from compodiff.pipeline import CompoDiffPipeline
    from compodiff.retrieval import GalleryIndex
    from compodiff.training import bf16_is_fast
    from datagen.shards import read_shard
    from orchestration.layout import Layout
    from orchestration.params import load_params

    layout = Layout(root, load_params(root / "params.yaml"))
    p = layout.params
    gallery_file = layout.world_benchmark / "gallery.parquet"
    if not gallery_file.is_file():
        raise StartupError(f"no gallery at {gallery_file}: run the lifecycle (world_benchmark) first")
    gallery_png = read_shard(gallery_file, ["image_png"]).column("image_png").to_pylist()
    if model and model.startswith("models:/"):
        import mlflow

        from orchestration.tracking import resolve_tracking_uri

        mlflow.set_tracking_uri(resolve_tracking_uri(p.tracking.tracking_uri, root))
        try:
            served = mlflow.pyfunc.load_model(model).unwrap_python_model()
        except Exception as err:  # noqa: BLE001 - any registry failure stops the start-up with its reason
            raise StartupError(f"cannot load {model} from {p.tracking.tracking_uri}: {err}") from None
        pipe, index, encoder_id = served.pipe, served.index, served.settings["encoder"]
        if index is None:
            raise StartupError(f"{model} was logged without a gallery index")
    else:
        weights = (root / model if not Path(model).is_absolute() else Path(model)) if model \
            else layout.stage_dir("stage2") / "denoiser.safetensors"  # a relative path is the project's
        pipe = CompoDiffPipeline(load_checkpoint(weights), load_encoder(p.encoder.model, p.encoder.pretrained,
                                                                       root=root))
        index, encoder_id = GalleryIndex.load(layout.faiss_index), p.encoder.model
    if precision == "bf16" and not bf16_is_fast(torch.device("cpu")):
        print("note: this CPU has no bf16 units; torch emulates bf16, slower than fp32", flush=True)
    pipe = pipe.in_precision(precision)
    arrays, _, _ = load_features(layout.gallery_features)
    return SearchEngine(pipe, index, gallery_png, arrays["image"].astype(np.float32), encoder_id, p.benchmark.eta,
                        p.benchmark.mix_reference, seed=0)
