"""The one CLIP loader: every embedding in the project comes from here.

``load_encoder`` goes through open_clip's own factory for every model, so the
world's encoder (``local-dir:data/encoder``) and the paper's (``ViT-L-14`` +
``openai``, or a local weights file) take the same code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

LOCAL_DIR = "local-dir:"


class EncoderError(RuntimeError):
    pass


@dataclass
class Encoder:
    """An open_clip model with its preprocessing and tokenizer, in eval mode."""

    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    model_id: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def text_width(self) -> int:
        return int(self._text_tower().ln_final.weight.shape[0])

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.context_length)

    # --- images -----------------------------------------------------------------
    def pixels(self, images) -> torch.Tensor:
        """Preprocess a list of PIL images or uint8 HxWx3 arrays into a (B, 3, S, S) tensor."""
        size = self.image_size
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1] == images.shape[2] == size:
            # Fast path, identical to the transform for images already at the model size
            # (Resize and CenterCrop are then no-ops): scale, normalise.
            x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
            mean, std = self._mean_std()
            return (x - mean[:, None, None]) / std[:, None, None]
        out = []
        for im in images:
            if isinstance(im, np.ndarray):
                im = Image.fromarray(im)
            out.append(self.preprocess(im.convert("RGB")))
        return torch.stack(out)

    @torch.no_grad()
    def encode_images(self, images, batch_size: int = 512) -> torch.Tensor:
        """Projected image embeddings (B, D), not normalised (CompoDiff diffuses them raw)."""
        chunks = []
        for i in range(0, len(images), batch_size):
            x = self.pixels(images[i:i + batch_size]).to(self.device)
            chunks.append(self.model.encode_image(x).float().cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)

    # --- text -------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    @torch.no_grad()
    def encode_text(self, texts: list[str], batch_size: int = 1024) -> torch.Tensor:
        """Pooled, projected text embeddings (B, D), not normalised."""
        chunks = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[i:i + batch_size]).to(self.device)
            chunks.append(self.model.encode_text(tokens).float().cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)

    @torch.no_grad()
    def text_tokens(self, texts: list[str], pad_mask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token hidden states after the final LayerNorm (no pooling, no projection).

        Returns (text_tokens (B, L, W), text_mask (B, L) bool, True on real tokens).
        ``pad_mask=True`` also hides padding keys inside the text tower, which is how the
        released CompoDiff's text condition was computed (a Hugging Face tokenizer with an
        attention mask); open_clip alone uses the causal mask only.
        """
        tokens = self.tokenize(texts).to(self.device)
        return text_hidden_states(self._text_tower(), tokens, pad_mask)

    def _text_tower(self):
        return self.model.text if hasattr(self.model, "text") else self.model

    def _mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def text_hidden_states(tower, tokens: torch.Tensor, pad_mask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) token ids -> ((B, L, W) states after ln_final, (B, L) mask of real tokens)."""
    eot = tokens.argmax(dim=-1)  # the EOT id is the largest in the CLIP vocabulary
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    real = positions[None, :] <= eot[:, None]  # (B, L)
    cast_dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(tokens).to(cast_dtype) + tower.positional_embedding.to(cast_dtype)
    attn_mask = tower.attn_mask
    if pad_mask:
        heads = tower.transformer.resblocks[0].attn.num_heads
        pad = torch.zeros(real.shape, dtype=x.dtype, device=x.device).masked_fill(~real, float("-inf"))
        causal = attn_mask.to(x.dtype) if attn_mask is not None else 0.0
        attn_mask = (causal + pad[:, None, :]).repeat_interleave(heads, dim=0)  # (B*H, L, L)
    x = tower.transformer(x, attn_mask=attn_mask)
    return tower.ln_final(x).float(), real


def resolve_model_name(model: str, root: str | Path | None = None) -> str:
    """``local-dir:`` paths are relative to the project root (or ``root``)."""
    if model.startswith(LOCAL_DIR):
        path = Path(model[len(LOCAL_DIR):])
        if not path.is_absolute() and root is not None:
            path = Path(root) / path
        return LOCAL_DIR + str(path)
    return model


def encoder_id(model: str, pretrained: str | None = None) -> str:
    """The name an index records for the encoder of its features (``Encoder.model_id``)."""
    return model if pretrained is None else f"{model}/{pretrained}"


def load_encoder(model: str, pretrained: str | None = None, device: str | torch.device = "cpu",
                 root: str | Path | None = None) -> Encoder:
    """Load any open_clip model: ``("ViT-L-14", "openai")``, ``("ViT-L-14", "/path/weights.bin")``
    or ``("local-dir:/path")`` for a model this project saved with ``save_encoder``."""
    name = resolve_model_name(model, root)
    if name.startswith(LOCAL_DIR):
        path = Path(name[len(LOCAL_DIR):])
        if not (path / "open_clip_config.json").is_file():
            raise EncoderError(f"encoder {model!r}: {path}/open_clip_config.json not found "
                               "(train the world encoder first: the `encoder` step)")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise EncoderError(f"encoder {model!r}: no weights file in {path}; refusing a random model")
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    except (RuntimeError, OSError, ValueError) as err:
        raise EncoderError(f"could not load encoder {model!r} (pretrained={pretrained!r}): {err}. "
                           "Without network access, give a local weights file or directory.") from err
    clip.eval()
    model_id = encoder_id(model, pretrained)
    return Encoder(clip, preprocess, open_clip.get_tokenizer(name), model_id, torch.device(device))


def save_encoder(clip: torch.nn.Module, model_cfg: dict, preprocess_cfg: dict, out_dir: str | Path) -> Path:
    """Save in open_clip's ``local-dir`` layout (config + safetensors) so ``load_encoder`` reads it."""
    import json

    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in clip.state_dict().items()}
    save_file(state, str(out_dir / "open_clip_model.safetensors"))
    return out_dir


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)
