"""Loading the released weights, and saving/loading our own checkpoints.

The release is one ``pytorch_model.bin``: a plain fp32 state dict whose keys start
with ``model.net.`` (network) or ``model.noise_scheduler.`` (schedule buffers,
recomputable, ignored). Ours are safetensors files carrying the resolved config.
Any mismatch is an error that lists the keys: never a silent partial load.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from dataclasses import fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from compodiff.atomic import atomic_path
from compodiff.denoiser import CompoDiffDenoiser, DenoiserConfig
from compodiff.errors import InputError

CONFIG_KEY = "compodiff.denoiser_config"
# the whole header metadata as one sorted JSON value: safetensors orders several keys per process, so the
# same weights would give different bytes from run to run
HEADER_KEY = "compodiff"


class CheckpointError(InputError):
    pass


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Release keys -> our keys: drop ``model.`` then ``net.``; drop the schedule buffers."""
    out = {}
    for key, value in state.items():
        k = key[len("model."):] if key.startswith("model.") else key
        if k.startswith("noise_scheduler."):
            continue  # recomputed by compodiff.diffusion.CosineSchedule
        k = k[len("net."):] if k.startswith("net.") else k
        out[k] = value
    return out


def infer_config(state: dict[str, torch.Tensor], timesteps: int = 1000) -> DenoiserConfig:
    """Read the architecture off the tensor shapes (no config needed, none can disagree)."""
    try:
        width, text_dim = state["to_text_embeds.0.weight"].shape
        dim_head = state["transformer.layers.0.0.null_kv"].shape[1]
        heads = state["transformer.layers.0.0.to_q.weight"].shape[0] // dim_head
        cross_heads = state["transformer.layers.0.1.to_q.weight"].shape[0] // dim_head
        mask_in = state["to_mask_embeds.1.net.0.0.weight"].shape[1]
        ff_inner = state["transformer.layers.0.2.1.weight"].shape[0] // 2
    except KeyError as err:
        raise CheckpointError(f"not a CompoDiff denoiser state dict: key {err} missing") from None
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"transformer\.layers\.(\d+)\.", k)))
    text2 = state.get("to_text2_embeds.0.weight")
    return DenoiserConfig(embed_dim=width, depth=depth, heads=heads, dim_head=dim_head, cross_heads=cross_heads,
                          text_dim=text_dim, text2_dim=0 if text2 is None else text2.shape[1],
                          mask_size=math.isqrt(mask_in), ff_mult=ff_inner // width, timesteps=timesteps)


def load_state_strict(model: CompoDiffDenoiser, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {name} key(s): {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}")
        raise CheckpointError(f"{source} does not match the denoiser: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_official_checkpoint(path: str | Path, config: DenoiserConfig | None = None,
                             map_location: str | torch.device = "cpu") -> CompoDiffDenoiser:
    """Load the released ``pytorch_model.bin`` (``model.`` / ``model.net.`` prefixes accepted).

    ``weights_only=True``: a pickle that is anything but plain tensors is refused, not executed.
    The architecture is read from the shapes; ``timesteps`` from ``config.json`` beside the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "pytorch_model.bin"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is not a plain state dict that loads with weights_only=True: {err}") from None
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a plain state dict of tensors")
    state = strip_prefix(raw)
    timesteps = 1000
    cfg_file = path.parent / "config.json"
    if cfg_file.is_file():
        timesteps = int(json.loads(cfg_file.read_text()).get("timesteps", 1000))
    config = config or infer_config(state, timesteps)
    model = CompoDiffDenoiser(config)
    load_state_strict(model, {k: v.float() for k, v in state.items()}, str(path))
    return model.eval()


def save_checkpoint(model: CompoDiffDenoiser, path: str | Path, metadata: dict | None = None) -> Path:
    """safetensors with the resolved config in its header, written atomically."""
    meta = {HEADER_KEY: json.dumps({**(metadata or {}), CONFIG_KEY: model.config.to_dict()}, sort_keys=True,
                                   default=str)}
    # The rotary frequencies are one tensor shared by every layer: store each copy separately.
    state = {k: v.detach().contiguous().clone().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> CompoDiffDenoiser:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = _parsed(f.metadata() or {})
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {err}") from None
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{path} carries no denoiser config ({CONFIG_KEY} missing from its header)")
    cfg_dict = meta[CONFIG_KEY]
    known = {f.name for f in fields(DenoiserConfig)}
    unknown = sorted(set(cfg_dict) - known)
    if unknown:
        raise CheckpointError(f"{path}: config has unknown field(s) {unknown}")
    model = CompoDiffDenoiser(DenoiserConfig(**cfg_dict))
    load_state_strict(model, state, str(path))
    return model.eval()


def checkpoint_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return _parsed(f.metadata() or {})


def _parsed(meta: dict[str, str]) -> dict:
    """The header's metadata: one JSON value under HEADER_KEY, or (earlier checkpoints) one per key."""
    if HEADER_KEY in meta:
        return json.loads(meta[HEADER_KEY])
    return {k: json.loads(v) for k, v in meta.items()}
