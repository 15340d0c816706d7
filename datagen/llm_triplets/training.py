"""The causal-LM training loop (pre-training on captions, LoRA fine-tuning on completions)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from compodiff.seeding import keeps_global_rng


def _batches(rng: np.random.Generator, n: int, batch: int):
    """Random batches, every index once per epoch. Not grouped by length: sorted pools (a quarter of
    the tokens are padding otherwise) made the world LM's held-out pre-training loss 0.80 instead of
    0.66 after 600 steps, since a caption's length tells its number of objects."""
    order = rng.permutation(n)
    cursor = 0
    while True:
        if cursor + batch > n:
            order, cursor = rng.permutation(n), 0
        yield order[cursor:cursor + batch]
        cursor += batch


def _encode(tokenizer, prompts: list[str], completions: list[str] | None, max_len: int):
    """Token ids with the prompt masked out of the loss (labels -100) when completions are given."""
    ids, labels = [], []
    for i, p in enumerate(prompts):
        a = [tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False)["input_ids"]
        b = [] if completions is None else tokenizer(completions[i], add_special_tokens=False)["input_ids"]
        b = b + [tokenizer.eos_token_id]
        seq = (a + b)[:max_len]
        lab = ([-100] * len(a) + b)[:max_len] if completions is not None else seq[:]
        ids.append(seq)
        labels.append(lab)
    width = max(len(s) for s in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in ids])
    attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
    lab = torch.tensor([s + [-100] * (width - len(s)) for s in labels])
    return input_ids, attn, lab


@keeps_global_rng  # it seeds torch's global RNG (init, dropout, sampling)
def train_causal_lm(model, tokenizer, prompts: list[str], completions: list[str] | None, steps: int,
                    batch_size: int, lr: float, seed: int, max_len: int = 128,
                    log: Callable[[int, float], None] | None = None) -> float:
    """Plain AdamW loop with linear warm-up and cosine decay; returns the final loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    torch.manual_seed(seed)
    batches = _batches(np.random.default_rng(seed), len(prompts), min(batch_size, len(prompts)))
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        idx = next(batches)
        ids, attn, labels = _encode(tokenizer, [prompts[i] for i in idx],
                                    None if completions is None else [completions[i] for i in idx], max_len)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"language-model loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        loss_value = loss.item()
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(step, loss_value)
    model.eval()
    return loss_value
