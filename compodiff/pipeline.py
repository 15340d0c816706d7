"""The composed-query pipeline: reference image embedding + instruction (+ negative text, + mask)
-> target image embedding, batched (paper 3.3, Fig. 4).

Per batch of queries the conditions of all three guidance branches are encoded
once (text tower, projections, every layer's cross-attention keys and values);
each sampling step then costs one batched forward of the two-token transformer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compodiff.denoiser import CompoDiffDenoiser, TextKV, rows_identical
from compodiff.diffusion import CosineSchedule
from compodiff.precision import in_precision
from compodiff.sampling import ddim_sample, guided_x0, time_pairs_for_steps


@dataclass
class TextConditions:
    tokens: torch.Tensor  # (B, L, text_dim)
    mask: torch.Tensor | None  # (B, L) bool, None = attend to every position (as released)
    tokens2: torch.Tensor | None = None  # second encoder (T5), (B, L2, text2_dim)
    mask2: torch.Tensor | None = None

    def select(self, idx: slice) -> TextConditions:
        pick = lambda x: None if x is None else x[idx]  # noqa: E731
        return TextConditions(self.tokens[idx], pick(self.mask), pick(self.tokens2), pick(self.mask2))


def prepare_masks(masks, batch: int, size: int, device) -> torch.Tensor:
    """Any (B, H, W) or (H, W) map (or None) -> (B, size, size) {0, 1}: resized, thresholded at 0.5."""
    if masks is None:
        return torch.zeros(batch, size, size, device=device)
    m = torch.as_tensor(masks, dtype=torch.float32, device=device)
    if m.dim() == 2:
        m = m.expand(batch, *m.shape)
    if m.dim() != 3 or m.shape[0] != batch:
        raise ValueError(f"masks must be (B={batch}, H, W) or (H, W), got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("masks contain NaN or infinite values")
    if m.shape[1:] != (size, size):
        m = F.interpolate(m[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return (m > 0.5).float()


class CompoDiffPipeline:
    """A denoiser with its text encoder(s): ``compose`` for strings, ``compose_tokens`` for tokens."""

    def __init__(self, denoiser: CompoDiffDenoiser, encoder=None, text_encoder2=None,
                 attend_padding: bool = True, pad_mask: bool = False, precision: str = "fp32"):
        # a serving precision other than fp32 (compodiff.precision) works on a copy of the network
        self.denoiser = in_precision(denoiser, precision).eval()
        self.precision = precision
        self.encoder = encoder  # compodiff.encoders.Encoder (CLIP text tower for instructions)
        self.text_encoder2 = text_encoder2  # optional T5 (compodiff.text_t5.T5TextEncoder)
        self.schedule = CosineSchedule(denoiser.config.timesteps).to(self.device)
        self.attend_padding = attend_padding  # True: the release's cross-attention over padding too
        self.pad_mask = pad_mask  # True: hide padding inside the text tower (how the release was trained)
        self._null_cache: dict = {}  # null text -> its keys and values (see _null_kv)

    def in_precision(self, precision: str) -> CompoDiffPipeline:
        """This pipeline serving in another precision (compodiff.precision), on a copy of its network."""
        if precision == self.precision:
            return self
        return CompoDiffPipeline(self.denoiser, self.encoder, self.text_encoder2, self.attend_padding, self.pad_mask,
                                 precision=precision)

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    # --- text ---------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> TextConditions:
        if self.encoder is None:
            raise ValueError("this pipeline has no text encoder: use compose_tokens with pre-encoded text")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings; item(s) {bad[:5]} are not")
        tokens, real = self.encoder.text_tokens(list(texts), pad_mask=self.pad_mask)
        cond = TextConditions(tokens.to(self.device), None if self.attend_padding else real.to(self.device))
        if self.denoiser.config.text2_dim:
            if self.text_encoder2 is None:
                raise ValueError("the denoiser expects a second text encoder (text2_dim > 0); none given")
            tokens2, real2 = self.text_encoder2.text_tokens(list(texts))
            cond.tokens2, cond.mask2 = tokens2.to(self.device), real2.to(self.device)
        return cond

    def _null_kv(self, null: TextConditions) -> TextKV | tuple:
        """The null text's keys and values, kept between calls while the weights are unchanged:
        every query without a negative text shares the encoding of "" (a third of the conditions'
        cost at batch 1). Per-row negative texts are returned as they are, for ``guidance_context``."""
        parts = (null.tokens, null.mask, null.tokens2, null.mask2)
        if not rows_identical(*parts):
            return parts
        digest = hashlib.sha1()
        for x in parts:
            digest.update(b"-" if x is None else x[:1].detach().cpu().contiguous().numpy().tobytes())
        weights = tuple((w.data_ptr(), w._version) for w in self.denoiser.parameters())
        key = (digest.hexdigest(), weights)
        if key not in self._null_cache:
            if len(self._null_cache) >= 8:
                self._null_cache.pop(next(iter(self._null_cache)))
            self._null_cache[key] = self.denoiser.text_kv(*parts)
        return self._null_cache[key]

    # --- composed queries -----------------------------------------------------------
    @torch.no_grad()
    def compose(self, ref_image_embeds: torch.Tensor, texts: list[str], negative_texts: list[str] | None = None,
                masks=None, w_image: float = 1.5, w_text: float = 7.5, steps: int = 10, seed: int = 0,
                num_samples: int = 1, eta: float = 1.0, mix_reference: float = 0.0,
                batch_size: int = 256) -> torch.Tensor:
        """Target embeddings (B, D) for B queries. ``negative_texts`` replace the null text "" in
        guidance (Eq. 4); ``masks`` (B, H, W) are kept in every branch; ``num_samples`` R samples per
        query are averaged; ``mix_reference`` s gives (1 - s) out + s ref (README: 0.1, 0.05 with a mask)."""
        ref = torch.as_tensor(ref_image_embeds, dtype=torch.float32)
        if ref.dim() != 2 or ref.shape[0] != len(texts):
            raise ValueError(f"ref_image_embeds must be (B={len(texts)}, D), got {tuple(ref.shape)}")
        text = self.encode_text(texts)
        null = self.encode_text(negative_texts if negative_texts is not None else [""] * len(texts))
        if negative_texts is not None and len(negative_texts) != len(texts):
            raise ValueError(f"{len(negative_texts)} negative texts for {len(texts)} queries")
        return self.compose_tokens(ref, text, null, masks, w_image, w_text, steps, seed, num_samples, eta,
                                   mix_reference, batch_size)

    @torch.no_grad()
    def text_to_image(self, texts: list[str], **kwargs) -> torch.Tensor:
        """Eq. (1) use: zero reference image, zero mask."""
        zeros = torch.zeros(len(texts), self.denoiser.config.embed_dim)
        return self.compose(zeros, texts, **kwargs)

    @torch.inference_mode()
    def compose_tokens(self, ref_image_embeds: torch.Tensor, text: TextConditions, null_text: TextConditions,
                       masks=None, w_image: float = 1.5, w_text: float = 7.5, steps: int = 10, seed: int = 0,
                       num_samples: int = 1, eta: float = 1.0, mix_reference: float = 0.0,
                       batch_size: int = 256) -> torch.Tensor:
        cfg = self.denoiser.config
        ref = torch.as_tensor(ref_image_embeds, dtype=torch.float32).to(self.device)
        b = ref.shape[0]
        if ref.dim() != 2 or ref.shape[1] != cfg.embed_dim:
            raise ValueError(f"ref_image_embeds has shape {tuple(ref.shape)}, expected (B, {cfg.embed_dim})")
        if not torch.isfinite(ref).all():
            raise ValueError("ref_image_embeds contain NaN or infinite values")
        mask_map = prepare_masks(masks, b, cfg.mask_size, self.device)
        generator = torch.Generator().manual_seed(seed)
        pairs = time_pairs_for_steps(steps, cfg.timesteps)
        out = []
        for start in range(0, b, batch_size):
            idx = slice(start, min(b, start + batch_size))
            out.append(self._sample_batch(ref[idx], text.select(idx), null_text.select(idx), mask_map[idx],
                                          w_image, w_text, pairs, generator, num_samples, eta))
        target = torch.cat(out).float()  # fp32 whatever the serving precision
        if mix_reference:
            target = (1 - mix_reference) * target + mix_reference * ref
        return target

    def _sample_batch(self, ref, text: TextConditions, null: TextConditions, mask_map, w_image, w_text, pairs,
                      generator, num_samples, eta) -> torch.Tensor:
        den = self.denoiser
        b, r = ref.shape[0], num_samples
        # The three branches' conditions, encoded once for every step: [cond; null_text; null_all],
        # each query repeated R times inside its branch, as the release does.
        ctx = den.guidance_context((text.tokens, text.mask, text.tokens2, text.mask2), self._null_kv(null), ref,
                                   mask_map)
        ctx = ctx.repeat_interleave(r)
        x = torch.randn((b * r, den.config.embed_dim), generator=generator).to(self.device)
        # every step's time token in one call (they depend on t alone): one pass over the time MLP
        times = [t for t, _ in pairs]
        tokens = dict(zip(times, den.time_token(torch.tensor(times, device=self.device)).unbind(0)))

        def x0_fn(x_t, t):
            return guided_x0(den, x_t, t, ctx, w_image, w_text, tokens[int(t[0])].expand(x_t.shape[0], -1))

        x0 = ddim_sample(x0_fn, x, pairs, self.schedule, eta=eta, generator=generator)
        return x0.view(b, r, -1).mean(dim=1)
