"""Composed search: reference image (+ mask) + text (+ negative text) -> CompoDiff target embedding ->
top k of a gallery index, batched; and a contact sheet of the results."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from compodiff.masking import noise_masked_region
from compodiff.pipeline import CompoDiffPipeline
from compodiff.retrieval import GalleryIndex


def masked_reference(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator,
                     noise_std: float = 64.0) -> np.ndarray:
    """The reference as the model saw masked images in training (Eq. 2): noise in the masked region."""
    if mask is None:
        return image
    return noise_masked_region(image, mask.astype(bool), rng, noise_std)


@torch.no_grad()
def composed_search(pipe: CompoDiffPipeline, index: GalleryIndex, reference_images: list[np.ndarray],
                    texts: list[str], negative_texts: list[str] | None = None,
                    masks: list[np.ndarray | None] | None = None, k: int = 10, w_image: float = 1.5,
                    w_text: float = 7.5, steps: int = 10, seed: int = 0, eta: float = 1.0,
                    mix_reference: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(scores, gallery ids), each (Q, k); ``eta`` and ``mix_reference`` as in ``CompoDiffPipeline.compose``."""
    if pipe.encoder is None:
        raise ValueError("composed search needs the pipeline's CLIP encoder for the reference images")
    if len(reference_images) != len(texts):
        raise ValueError(f"{len(reference_images)} reference images for {len(texts)} texts")
    masks = masks or [None] * len(texts)
    rng = np.random.default_rng(seed)
    refs = [masked_reference(im, m, rng) for im, m in zip(reference_images, masks)]
    ref_emb = pipe.encoder.encode_images(refs)
    size = pipe.denoiser.config.mask_size
    mask_maps = np.stack([np.zeros((size, size)) if m is None else resize_mask(m, size) for m in masks])
    target = pipe.compose(ref_emb, texts, negative_texts, mask_maps, w_image=w_image, w_text=w_text, steps=steps,
                          seed=seed, eta=eta, mix_reference=mix_reference)
    return index.search(target.numpy(), k, pipe.encoder.model_id)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A boolean mask at the denoiser's mask size (0/1 floats)."""
    im = Image.fromarray((mask.astype(bool) * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(im) > 127).astype(np.float32)


def contact_sheet(query: np.ndarray, text: str, results: list[np.ndarray], scores: list[float],
                  tile: int = 128) -> Image.Image:
    """The query image and its text, then the results left to right with their scores."""
    n = len(results)
    sheet = Image.new("RGB", ((n + 1) * (tile + 8) + 8, tile + 40), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (im, label) in enumerate([(query, "query")] + [(r, f"{s:.3f}") for r, s in zip(results, scores)]):
        x = 8 + i * (tile + 8)
        sheet.paste(Image.fromarray(im).resize((tile, tile), Image.Resampling.NEAREST), (x, 8))
        draw.text((x, tile + 12), label, fill=(0, 0, 0))
    draw.text((8, tile + 26), text[:120], fill=(0, 0, 160))
    return sheet
