"""CompoDiff: composed image retrieval with latent diffusion (TMLR), the model library.

Public API::

    import compodiff
    net = compodiff.build_denoiser("official")              # the released architecture
    net = compodiff.load_official_checkpoint("CompoDiff-Aesthetic/pytorch_model.bin")
    pipe = compodiff.CompoDiffPipeline(net, encoder=compodiff.load_encoder("ViT-bigG-14", "laion2b_s39b_b160k"))
    target = pipe.compose(ref_image_embeds, ["as a pencil sketch"], w_image=1.5, w_text=7.5, steps=10, seed=0)

This package never imports dagster, dvc or mlflow.
"""

from compodiff.checkpoint import CheckpointError, load_checkpoint, load_official_checkpoint, save_checkpoint
from compodiff.denoiser import PRESETS, CompoDiffDenoiser, Context, DenoiserConfig, preset
from compodiff.diffusion import CosineSchedule, x0_loss
from compodiff.encoders import Encoder, load_encoder
from compodiff.pipeline import CompoDiffPipeline, TextConditions
from compodiff.sampling import ddim_sample, guided_x0, official_time_pairs, time_pairs_for_steps


def build_denoiser(name_or_config: str | DenoiserConfig = "official", **overrides) -> CompoDiffDenoiser:
    """A freshly initialised denoiser from a preset name ("official", "world", "tiny", ...) or a config.
    The "official" network's state dict has the release's keys and shapes minus ``model.net.``."""
    if isinstance(name_or_config, DenoiserConfig):
        cfg = name_or_config
    else:
        cfg = preset(name_or_config, **overrides)
    return CompoDiffDenoiser(cfg)


__all__ = [
    "PRESETS", "CheckpointError", "CompoDiffDenoiser", "CompoDiffPipeline", "Context", "CosineSchedule",
    "DenoiserConfig", "Encoder", "TextConditions", "build_denoiser", "ddim_sample", "guided_x0",
    "load_checkpoint", "load_encoder", "load_official_checkpoint", "official_time_pairs", "preset",
    "save_checkpoint", "time_pairs_for_steps", "x0_loss",
]
