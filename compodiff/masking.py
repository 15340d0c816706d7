"""The masked image of the masked-conversion task (Eq. 2): Gaussian noise where the mask is set.

Training (the features step) and composed search with a mask use this one function, so a masked
query looks to the model like the masked images it was trained on."""

from __future__ import annotations

import numpy as np


def noise_masked_region(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """uint8 image with N(127.5, std) noise where ``mask`` is set."""
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
    out = image.copy()
    noise = np.clip(rng.normal(127.5, std, size=(int(mask.sum()), image.shape[2])), 0, 255)
    out[mask] = noise.astype(np.uint8)
    return out
