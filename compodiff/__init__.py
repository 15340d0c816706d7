"""CompoDiff: composed image retrieval with latent diffusion (TMLR), the model library.

Public API::

    import compodiff
    net = compodiff.build_denoiser("official")              # the released architecture
    net = compodiff.load_official_checkpoint("CompoDiff-Aesthetic/pytorch_model.bin")
    pipe = compodiff.CompoDiffPipeline(net, encoder=compodiff.load_encoder("ViT-bigG-14", "laion2b_s39b_b160k"))
    target = pipe.compose(ref_image_embeds, ["as a pencil sketch"], w_image=1.5, w_text=7.5, steps=10, seed=0)

This package never imports dagster, dvc or mlflow.
"""

import importlib

# Lazy attributes (PEP 562): `import compodiff.config` from a light step does not pay for
# torch and open_clip.
_EXPORTS = {
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "load_official_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint", "PRESETS": "denoiser", "CompoDiffDenoiser": "denoiser", "Context": "denoiser",
    "DenoiserConfig": "denoiser", "preset": "denoiser", "CosineSchedule": "diffusion", "x0_loss": "diffusion",
    "Encoder": "encoders", "load_encoder": "encoders", "CompoDiffPipeline": "pipeline",
    "TextConditions": "pipeline", "ddim_sample": "sampling", "guided_x0": "sampling",
    "official_time_pairs": "sampling", "time_pairs_for_steps": "sampling",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"compodiff.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'compodiff' has no attribute {name!r}")


def build_denoiser(name_or_config="official", **overrides):
    """A freshly initialised denoiser from a preset name ("official", "world", "tiny", ...) or a config.
    The "official" network's state dict has the release's keys and shapes minus ``model.net.``."""
    from compodiff.denoiser import CompoDiffDenoiser, DenoiserConfig, preset

    cfg = name_or_config if isinstance(name_or_config, DenoiserConfig) else preset(name_or_config, **overrides)
    return CompoDiffDenoiser(cfg)


__all__ = [
    "PRESETS", "CheckpointError", "CompoDiffDenoiser", "CompoDiffPipeline", "Context", "CosineSchedule",
    "DenoiserConfig", "Encoder", "TextConditions", "build_denoiser", "ddim_sample", "guided_x0",
    "load_checkpoint", "load_encoder", "load_official_checkpoint", "official_time_pairs", "preset",
    "save_checkpoint", "time_pairs_for_steps", "x0_loss",
]
