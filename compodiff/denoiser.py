"""The CompoDiff denoising transformer (paper 3.1-3.2, Fig. 3), weight-compatible with the release.

The transformer sees two tokens, the noisy image embedding x_t and a time token,
and reads every condition through cross-attention: the per-token text states
(projected), the reference image embedding and a mask embedding. It predicts x0.
Module and parameter names follow the released checkpoint
(shared/reference/official_checkpoint_keys.txt minus its ``model.net.`` prefix),
so its state dict loads as is.

Conditions are split from the denoising pass: ``context`` computes every
layer's cross-attention keys and values once per query, and ``denoise`` reuses
them at every sampling step (they do not depend on x_t or t).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DenoiserConfig:
    embed_dim: int = 768  # CLIP image embedding = transformer width
    depth: int = 12
    heads: int = 16  # self-attention query heads (one shared key/value head)
    dim_head: int = 64
    cross_heads: int = 8  # the release never passes its head count: the default 8 applies
    text_dim: int = 1280  # per-token width of the text tower (ViT-bigG in the release)
    text2_dim: int = 0  # optional second text encoder (T5-XL: 2048), the paper's CLIP + T5 variant
    mask_size: int = 64  # masks are (mask_size, mask_size) {0,1} maps
    ff_mult: int = 4
    timesteps: int = 1000
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, DenoiserConfig] = {
    # The released network (config.json: embed_dim 768, depth 12, 16 heads of 64, 1000 steps).
    "official": DenoiserConfig(),
    # The paper's ViT-L model with CLIP-L/14 text tokens, and with T5-XL tokens added.
    "vitl-clip": DenoiserConfig(text_dim=768),
    "vitl-clip-t5": DenoiserConfig(text_dim=768, text2_dim=2048),
    # The paper's ViT-G model: hidden size 1280 (the OpenCLIP ViT-bigG embedding), bigG text tokens.
    "vitg": DenoiserConfig(embed_dim=1280, text_dim=1280),
    # The embedded world: 256-d world CLIP, small enough to train on a laptop CPU.
    "world": DenoiserConfig(embed_dim=256, depth=4, heads=8, dim_head=32, cross_heads=4, text_dim=128,
                            mask_size=64),
    # Unit tests.
    "tiny": DenoiserConfig(embed_dim=32, depth=2, heads=4, dim_head=8, cross_heads=2, text_dim=24,
                           mask_size=8, timesteps=100),
}


def preset(name: str, **overrides) -> DenoiserConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown denoiser preset {name!r}; presets: {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


class LayerNorm(nn.Module):
    """Gain-only LayerNorm, biased variance; eps 1e-5 in fp32, 1e-3 in half precision.
    ``stable`` first divides by the (detached, signed) channel max, as the release's final norm."""

    def __init__(self, dim: int, stable: bool = False):
        super().__init__()
        self.stable = stable
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        if self.stable:
            x = x / x.amax(dim=-1, keepdim=True).detach()
        return F.layer_norm(x, (x.shape[-1],), self.g.to(x.dtype), None, eps)


class MLP(nn.Module):
    """Linear-SiLU, Linear-SiLU, Linear, hidden width 2 * dim_out (the release's time and mask MLPs)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        hidden = 2 * dim_out
        self.net = nn.Sequential(
            nn.Sequential(nn.Linear(dim_in, hidden), nn.SiLU(), nn.Identity()),
            nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Identity()),
            nn.Linear(hidden, dim_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SinusoidalTime(nn.Module):
    """Float timestep -> [sin | cos] features, frequencies exp(-j ln(10000) / (dim/2 - 1))."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=t.dtype) * -(math.log(10000) / (half - 1)))
        angles = t[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class Rotary(nn.Module):
    """Rotary position embedding on the first ``2 * len(freqs)`` channels, interleaved pairs."""

    def __init__(self, rot_dim: int, theta: float = 10000.0):
        super().__init__()
        freqs = theta ** -(torch.arange(0, rot_dim, 2)[: rot_dim // 2].float() / rot_dim)
        self.freqs = nn.Parameter(freqs, requires_grad=False)  # a parameter in the release's state dict

    def cos_sin(self, n: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, rot) cosines and sines; the same for every layer, so ``denoise`` computes them once."""
        angles = torch.arange(n, device=device, dtype=self.freqs.dtype)[:, None] * self.freqs[None, :]
        angles = angles.repeat_interleave(2, dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, t: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        cos, sin = cos_sin if cos_sin is not None else self.cos_sin(t.shape[-2], t.device, t.dtype)
        rot = cos.shape[-1]
        head, tail = t[..., :rot], t[..., rot:]
        pairs = head.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return torch.cat((head * cos + rotated * sin, tail), dim=-1)


class RelPosBias(nn.Module):
    """T5 relative position bias (32 buckets, max distance 128), queries at 0..i-1, keys at 0..j-1."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def forward(self, i: int, j: int, device) -> torch.Tensor:  # -> (H, i, j)
        rel = torch.arange(j, device=device)[None, :] - torch.arange(i, device=device)[:, None]
        n = (-rel).clamp(min=0)
        max_exact = self.num_buckets // 2
        large = max_exact + (torch.log(n.float().clamp(min=1) / max_exact)
                             / math.log(self.max_distance / max_exact) * (self.num_buckets - max_exact)).long()
        bucket = torch.where(n < max_exact, n, large.clamp(max=self.num_buckets - 1))
        return self.relative_attention_bias(bucket).permute(2, 0, 1)


class SelfAttention(nn.Module):
    """Multi-query self-attention: H query heads, one shared key/value head, rotary on q and k,
    a learned null key/value, cosine-similarity logits scaled by 16, T5 relative bias."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary: Rotary, dropout: float, scale: float = 16.0):
        super().__init__()
        self.heads, self.dim_head, self.scale = heads, dim_head, scale
        self.norm = LayerNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim_head, bias=False)
        self.rotary_emb = rotary
        self.dropout = nn.Dropout(dropout)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False), LayerNorm(dim))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor,
                cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        q = self.to_q(x).view(b, n, self.heads, self.dim_head).transpose(1, 2)  # (B, H, N, d)
        k, v = self.to_kv(x).chunk(2, dim=-1)  # (B, N, d) each
        q, k = self.rotary_emb(q, cos_sin), self.rotary_emb(k, cos_sin)
        null_k, null_v = (t.to(x.dtype).expand(b, 1, self.dim_head) for t in self.null_kv.unbind(0))
        k, v = torch.cat((null_k, k), dim=1), torch.cat((null_v, v), dim=1)  # (B, N+1, d)
        root = math.sqrt(self.scale)
        q, k = F.normalize(q, dim=-1) * root, F.normalize(k, dim=-1) * root
        sim = torch.einsum("bhid,bjd->bhij", q, k) + attn_bias.to(q.dtype)
        attn = self.dropout(sim.softmax(dim=-1, dtype=torch.float32).to(sim.dtype))
        out = torch.einsum("bhij,bjd->bhid", attn, v)  # (B, H, N, d)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class CrossAttention(nn.Module):
    """Plain scaled dot-product cross-attention over the conditions, with a null key/value
    shared by all heads; keys and values come precomputed from ``kv``."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.norm = LayerNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, 2 * heads * dim_head, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False), LayerNorm(dim))

    def kv(self, context: torch.Tensor, null_first: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, W) context -> keys and values (B, h, 1 + L, d), null first, keys pre-scaled.
        Per token: the keys of a concatenated context are the concatenated keys of its parts."""
        b, n, _ = context.shape
        k, v = self.to_kv(context).view(b, n, 2, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        if null_first:
            null_k, null_v = (t.to(context.dtype).expand(b, self.heads, 1, self.dim_head)
                              for t in self.null_kv.unbind(0))
            k, v = torch.cat((null_k, k), dim=2), torch.cat((null_v, v), dim=2)
        return k * self.dim_head ** -0.25, v

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.to_q(self.norm(x)).view(b, n, self.heads, self.dim_head).transpose(1, 2)
        sim = (q * self.dim_head ** -0.25) @ k.transpose(-1, -2)  # (B, h, N, 1 + L)
        if key_mask is not None:
            sim = sim.masked_fill(~key_mask[:, None, None, :], -torch.finfo(sim.dtype).max)
        attn = self.dropout(sim.softmax(dim=-1, dtype=torch.float32).to(sim.dtype))
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, -1))


def feed_forward(dim: int, mult: int, dropout: float) -> nn.Sequential:
    """LN, Linear(dim -> 2 * inner), SwiGLU, (identity), dropout, Linear(inner -> dim); indices as released."""
    inner = mult * dim
    return nn.Sequential(LayerNorm(dim), nn.Linear(dim, 2 * inner, bias=False), SwiGLU(), nn.Identity(),
                         nn.Dropout(dropout), nn.Linear(inner, dim, bias=False))


class SwiGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = x.chunk(2, dim=-1)
        return value * F.silu(gate)


class CrossTransformer(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        w = cfg.embed_dim
        self.rel_pos_bias = RelPosBias(cfg.heads)
        rotary = Rotary(min(32, cfg.dim_head))  # one module, shared by every layer (as released)
        self.layers = nn.ModuleList([
            nn.ModuleList([
                SelfAttention(w, cfg.heads, cfg.dim_head, rotary, cfg.dropout),
                CrossAttention(w, cfg.cross_heads, cfg.dim_head, cfg.dropout),
                feed_forward(w, cfg.ff_mult, cfg.dropout),
            ])
            for _ in range(cfg.depth)
        ])
        self.norm = LayerNorm(w, stable=True)
        self.project_out = nn.Linear(w, w, bias=False)


class Context:
    """Per-layer cross-attention keys and values of one batch of conditions."""

    def __init__(self, kv: list[tuple[torch.Tensor, torch.Tensor]], key_mask: torch.Tensor | None):
        self.kv, self.key_mask = kv, key_mask

    @property
    def batch(self) -> int:
        return self.kv[0][0].shape[0]

    @staticmethod
    def cat(contexts: list[Context]) -> Context:
        kv = [(torch.cat([c.kv[i][0] for c in contexts]), torch.cat([c.kv[i][1] for c in contexts]))
              for i in range(len(contexts[0].kv))]
        masks = [c.key_mask for c in contexts]
        if all(m is None for m in masks):
            return Context(kv, None)
        filled = [m if m is not None else torch.ones(c.batch, c.kv[0][0].shape[2], dtype=torch.bool,
                                                     device=c.kv[0][0].device) for m, c in zip(masks, contexts)]
        return Context(kv, torch.cat(filled))

    def repeat_interleave(self, r: int) -> Context:
        kv = [(k.repeat_interleave(r, 0), v.repeat_interleave(r, 0)) for k, v in self.kv]
        return Context(kv, None if self.key_mask is None else self.key_mask.repeat_interleave(r, 0))


class TextKV:
    """Per-layer cross-attention keys and values of a text condition alone (1 or B rows)."""

    def __init__(self, kv: list[tuple[torch.Tensor, torch.Tensor]], key_mask: torch.Tensor | None):
        self.kv, self.key_mask = kv, key_mask


class CompoDiffDenoiser(nn.Module):
    """x0 = denoiser(x_t, t | text tokens, reference image embedding, mask)."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.config = cfg
        w = cfg.embed_dim
        self.to_text_embeds = nn.Sequential(nn.Linear(cfg.text_dim, w))
        if cfg.text2_dim:
            self.to_text2_embeds = nn.Sequential(nn.Linear(cfg.text2_dim, w))
        self.to_time_embeds = nn.Sequential(nn.Sequential(SinusoidalTime(w), MLP(w, w)))
        self.to_mask_embeds = nn.Sequential(nn.Flatten(1), MLP(cfg.mask_size ** 2, w))
        self.transformer = CrossTransformer(cfg)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: a norm's gain, which stays a float tensor when the linear layers are
        quantized for serving."""
        return self.transformer.norm.g.dtype

    # --- conditions ---------------------------------------------------------------
    def context(self, text_tokens: torch.Tensor, ref_image_embed: torch.Tensor, mask_map: torch.Tensor,
                text_mask: torch.Tensor | None = None, text2_tokens: torch.Tensor | None = None,
                text2_mask: torch.Tensor | None = None) -> Context:
        """text_tokens (B, L, text_dim), ref_image_embed (B, D) (zeros = null image),
        mask_map (B, S, S) in {0, 1} (zeros = no mask); optional text_mask (B, L) bool: the
        release attends to every text position, padding included, so None reproduces it."""
        b = text_tokens.shape[0]
        text, text_keys = self._text_part(text_tokens, text_mask, text2_tokens, text2_mask)
        tail = self._image_mask_part(ref_image_embed, mask_map, b)
        context = torch.cat((text, tail), dim=1)  # (B, L + 2, W)
        return Context([layer[1].kv(context) for layer in self.transformer.layers],
                       _key_mask(text_keys, b, context.device))

    def text_kv(self, tokens: torch.Tensor, mask=None, tokens2=None, mask2=None) -> TextKV:
        """Per-layer keys and values of a text condition alone (the null key first). Rows that all
        hold the same text (the null text "") are computed once: the result then has one row."""
        parts = (tokens, mask, tokens2, mask2)
        if rows_identical(*parts):
            parts = tuple(None if x is None else x[:1] for x in parts)
        text, keys = self._text_part(*parts)
        return TextKV([layer[1].kv(text) for layer in self.transformer.layers],
                      _key_mask(keys, text.shape[0], text.device, tail=2))

    def guidance_context(self, text: tuple, null: tuple | TextKV, ref_image_embed: torch.Tensor,
                         mask_map: torch.Tensor) -> Context:
        """The three branches of Eq. (4), [cond; null_text; null_all] (3B rows), for sampling.

        ``text`` is (tokens, mask, tokens2, mask2) as ``context`` takes them; ``null`` the same for
        the null or negative text, or its ``text_kv``. Keys and values are a per-token linear map of
        the conditions, so the null text's are computed once for both null branches (which differ
        only in the image token), and once for the batch when every row's null text is the same.
        Equal to ``Context.cat`` of the three ``context`` calls (a test)."""
        b = ref_image_embed.shape[0]
        cond = self.context(text[0], ref_image_embed, mask_map, *text[1:])
        null_kv = null if isinstance(null, TextKV) else self.text_kv(*null)
        tails = self._image_mask_part(torch.cat((ref_image_embed, torch.zeros_like(ref_image_embed))),
                                      torch.cat((mask_map, mask_map)), 2 * b)
        kv = []
        for layer, (nk, nv) in zip(self.transformer.layers, null_kv.kv):
            tk, tv = layer[1].kv(tails, null_first=False)  # (2B, h, 2, d): image and mask tokens
            nk, nv = (x.expand(b, -1, -1, -1).repeat(2, 1, 1, 1) for x in (nk, nv))
            kv.append((torch.cat((nk, tk), dim=2), torch.cat((nv, tv), dim=2)))
        if cond.kv[0][0].shape[2] != kv[0][0].shape[2]:
            raise ValueError(f"the text and the null text give {cond.kv[0][0].shape[2]} and {kv[0][0].shape[2]} "
                             "keys: encode them to one length")
        null_mask = None if null_kv.key_mask is None else null_kv.key_mask.expand(b, -1).repeat(2, 1)
        return Context.cat([cond, Context(kv, null_mask)])

    def _text_part(self, text_tokens: torch.Tensor, text_mask, text2_tokens, text2_mask):
        """Projected text tokens (B, L [+ L2], W) and the per-part key masks (None = all real)."""
        cfg = self.config
        b = text_tokens.shape[0]
        _expect(text_tokens, (b, None, cfg.text_dim), "text_tokens")
        dtype = self.dtype
        parts, masks = [self.to_text_embeds(text_tokens.to(dtype))], [(text_mask, text_tokens.shape[1])]
        if cfg.text2_dim:
            if text2_tokens is None:
                raise ValueError("this denoiser was built with a second text encoder: pass text2_tokens")
            _expect(text2_tokens, (b, None, cfg.text2_dim), "text2_tokens")
            parts.append(self.to_text2_embeds(text2_tokens.to(dtype)))
            masks.append((text2_mask, text2_tokens.shape[1]))
        elif text2_tokens is not None:
            raise ValueError("text2_tokens given, but the denoiser has no second text encoder (text2_dim=0)")
        return torch.cat(parts, dim=1), masks

    def _image_mask_part(self, ref_image_embed: torch.Tensor, mask_map: torch.Tensor, b: int) -> torch.Tensor:
        """The reference image and mask tokens (B, 2, W)."""
        cfg = self.config
        _expect(ref_image_embed, (b, cfg.embed_dim), "ref_image_embed")
        _expect(mask_map, (b, cfg.mask_size, cfg.mask_size), "mask_map")
        dtype = self.dtype
        return torch.stack((ref_image_embed.to(dtype), self.mask_embeds(mask_map.to(dtype))), dim=1)

    def mask_embeds(self, mask_map: torch.Tensor) -> torch.Tensor:
        """(B, S, S) -> (B, W). Most rows carry no mask (all of stage 1, 70% of stage 2, most queries):
        their embedding is the MLP of one all-zero map, computed once (the MLP is a third of a
        training step otherwise)."""
        has = mask_map.flatten(1).any(dim=1)
        if bool(has.all()):
            return self.to_mask_embeds(mask_map)
        emb = self.to_mask_embeds(torch.zeros_like(mask_map[:1])).expand(mask_map.shape[0], -1)
        if bool(has.any()):
            idx = has.nonzero().squeeze(1)
            emb = emb.index_put((idx,), self.to_mask_embeds(mask_map[idx]))
        return emb

    # --- denoising ----------------------------------------------------------------
    def time_token(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) timesteps -> (B, W) time tokens."""
        return self.to_time_embeds(t.to(self.dtype))

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, context: Context,
                time_token: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, D), t (B,) timesteps -> predicted x0 (B, D). A sampler may pass the
        precomputed ``time_token`` (B, W) of t: it depends on t alone."""
        _expect(x_t, (context.batch, self.config.embed_dim), "x_t")
        dtype = self.dtype
        if time_token is None:
            time_token = self.time_token(t)
        x = torch.stack((x_t.to(dtype), time_token.to(dtype)), dim=1)  # (B, 2, W)
        tr = self.transformer
        attn_bias = tr.rel_pos_bias(2, 3, x.device)  # two queries, null key + two keys
        cos_sin = tr.layers[0][0].rotary_emb.cos_sin(2, x.device, dtype)
        for (self_attn, cross_attn, ff), (k, v) in zip(tr.layers, context.kv):
            x = self_attn(x, attn_bias, cos_sin) + x
            x = cross_attn(x, k, v, context.key_mask) + x
            x = ff(x) + x
        return tr.project_out(tr.norm(x))[:, 0]  # token 0 predicts x0

    def forward(self, x_t, t, text_tokens, ref_image_embed, mask_map, text_mask=None, text2_tokens=None,
                text2_mask=None) -> torch.Tensor:
        return self.denoise(x_t, t, self.context(text_tokens, ref_image_embed, mask_map, text_mask,
                                                 text2_tokens, text2_mask))


def rows_identical(*tensors: torch.Tensor | None) -> bool:
    """Every row (dim 0) of every given tensor equals its first row (None counts as identical)."""
    return all(x is None or bool((x == x[:1]).all()) for x in tensors)


def _key_mask(parts: list[tuple[torch.Tensor | None, int]], b: int, device, tail: int = 2) -> torch.Tensor | None:
    """(B, 1 + L + tail) bool over [null key, text parts..., image and mask tokens], None if all real."""
    if all(m is None for m, _ in parts):
        return None
    ones = lambda n: torch.ones(b, n, dtype=torch.bool, device=device)  # noqa: E731
    pieces = [ones(1)] + [m.to(torch.bool) if m is not None else ones(n) for m, n in parts] + [ones(tail)]
    return torch.cat(pieces, dim=1)


def _expect(x: torch.Tensor, shape: tuple, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    ok = x.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, x.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {want}")
