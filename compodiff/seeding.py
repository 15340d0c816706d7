"""Library code that must seed torch's global RNG (module initialisation, dropout and Hugging Face
sampling draw from it, and take no generator) does so inside this scope, so the caller's stream is
the same after the call as before."""

from __future__ import annotations

import functools

import torch


def keeps_global_rng(fn):
    """Run ``fn`` with torch's global RNG state saved before and restored after (CPU and CUDA)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng():
            return fn(*args, **kwargs)
    return wrapper
