"""Contrastive training of the world's own open_clip model: the stand-in for pretrained CLIP.

The model is an ordinary ``open_clip.CLIP`` of a small custom architecture; it is
saved in open_clip's ``local-dir`` layout and loaded back by
``compodiff.encoders.load_encoder``, the loader that loads ViT-L/14 in the paper profiles.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from compodiff.encoders import load_encoder, save_encoder
from compodiff.seeding import keeps_global_rng
from compodiff.training import bf16_is_fast
from datagen.config import EncoderTrainConfig
from datagen.world.language import paraphrase_captions, vocabulary

PREPROCESS = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD),
              "interpolation": "bicubic", "resize_mode": "shortest"}


def model_config(cfg: EncoderTrainConfig, image_size: int) -> dict:
    return {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": list(cfg.vision_layers), "width": cfg.vision_width},
        "text_cfg": {"context_length": cfg.context_length, "vocab_size": 49408, "width": cfg.text_width,
                     "heads": cfg.text_heads, "layers": cfg.text_layers},
    }


def normalise_pixels(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(PREPROCESS["mean"])[:, None, None]
    std = torch.tensor(PREPROCESS["std"])[:, None, None]
    return (x - mean) / std


@keeps_global_rng  # it seeds torch's global RNG (init, dropout, sampling)
def train_clip(cfg: EncoderTrainConfig, images: np.ndarray, captions: list[str], image_size: int,
               seed: int, out_dir: str | Path,
               log: Callable[[int, dict], None] | None = None) -> dict:
    """Trains on (images uint8 (N, S, S, 3), captions) and saves to ``out_dir``; returns a summary."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(images) < cfg.batch_size:
        raise ValueError(f"need at least one batch of {cfg.batch_size} pairs, got {len(images)}")
    torch.manual_seed(seed)
    mcfg = model_config(cfg, image_size)
    clip = open_clip.model.CLIP(**mcfg)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=cfg.context_length)
    original = list(captions)
    captions = paraphrase_captions(original, cfg.paraphrase, seed,
                                   fits=lambda t: len(tokenizer.encode(t)) + 2 <= cfg.context_length,
                                   clauses=cfg.edit_clauses)
    tokens = tokenizer(captions)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))

    gen = np.random.default_rng(seed)
    order = gen.permutation(len(images))
    cursor = 0
    clip.train()
    start = time.perf_counter()
    loss_value = float("nan")
    bf16 = cfg.bf16 and bf16_is_fast(torch.device("cpu"))  # emulated bf16 is many times slower than fp32
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = gen.permutation(len(images)), 0
        idx = order[cursor:cursor + cfg.batch_size]
        cursor += cfg.batch_size
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            img_f = clip.encode_image(normalise_pixels(images[idx]))
            txt_f = clip.encode_text(tokens[idx])
        img_f, txt_f = F.normalize(img_f.float(), dim=-1), F.normalize(txt_f.float(), dim=-1)
        logits = clip.logit_scale.exp() * img_f @ txt_f.T
        labels = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        if not torch.isfinite(loss):
            raise FloatingPointError(f"world CLIP loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        loss_value = loss.item()
        if log is not None and (step % 25 == 0 or step == cfg.steps - 1):
            log(step, {"loss": loss_value, "lr": lr_at(step), "logit_scale": clip.logit_scale.exp().item()})
    seconds = time.perf_counter() - start
    clip.eval()
    save_encoder(clip, mcfg, {**PREPROCESS, "size": image_size}, out_dir)
    return {"final_loss": loss_value, "steps": cfg.steps, "bf16": bf16, "train_seconds": seconds,
            "samples_per_second": cfg.steps * cfg.batch_size / seconds, "train_pairs": len(images),
            "paraphrased": sum(a != b for a, b in zip(captions, original)), "words": sorted(vocabulary(captions))}


@torch.no_grad()
def retrieval_recall(model_dir: str | Path, images: np.ndarray, captions: list[str],
                     ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    """Text-to-image and image-to-text recall@k on held-out pairs, the encoder loaded back from disk."""
    enc = load_encoder(f"local-dir:{Path(model_dir).resolve()}")
    img = F.normalize(enc.encode_images(images), dim=-1)
    txt = F.normalize(enc.encode_text(list(captions)), dim=-1)
    sim = txt @ img.T  # (N texts, N images); pair i is the positive of row i
    out = {"eval_pairs": len(captions)}
    for name, s in (("t2i", sim), ("i2t", sim.T)):
        # rank of the true match: how many candidates score strictly higher
        true = s.diagonal()[:, None]
        rank = (s > true).sum(dim=1)
        for k in ks:
            out[f"{name}_R@{k}"] = float((rank < k).float().mean())
    return out
