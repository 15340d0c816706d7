"""Masks for the masked-conversion task (Eq. 2) and the masked image it encodes.

The paper prompts CLIPSeg with the caption's nouns (``ClipSegMasker``, the paper profiles); the world
has the renderer's exact object masks (``world_object_mask``). Either way the masked region of the
image is replaced by Gaussian noise before CLIP encodes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from compodiff.masking import noise_masked_region  # noqa: F401 - the features step's entry point


def world_object_mask(segmap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The exact mask of one visible object, picked at random; all zeros when none is visible."""
    present = [int(v) for v in np.unique(segmap) if v != 0]
    if not present:
        return np.zeros(segmap.shape, dtype=bool)
    return segmap == present[int(rng.integers(len(present)))]


class ClipSegMasker:
    """CLIPSeg (``CLIPSegForImageSegmentation``) prompted with a noun of the caption."""

    def __init__(self, model: str | Path, threshold: float = 0.5, device: str = "cpu"):
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        local = Path(str(model)).exists()
        try:
            self.processor = CLIPSegProcessor.from_pretrained(str(model), local_files_only=local)
            self.model = CLIPSegForImageSegmentation.from_pretrained(str(model), local_files_only=local).eval()
        except (OSError, ValueError) as err:
            raise ValueError(f"CLIPSeg model {model!r} does not load: {err}") from None
        self.model.to(device)
        self.threshold, self.device = threshold, device

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray], prompts: list[str]) -> np.ndarray:
        """(B, H, W) bool masks at each image's own size."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
        inputs = self.processor(text=prompts, images=images, return_tensors="pt", padding=True)
        logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits
        if logits.dim() == 2:  # a batch of one comes back squeezed
            logits = logits[None]
        probs = torch.sigmoid(logits)[:, None]
        h, w = images[0].shape[:2]
        probs = torch.nn.functional.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return (probs > self.threshold).cpu().numpy()
