"""The Combiner baseline (CLIP4Cir, Baldrati et al. 2022) over frozen CLIP features, with the optional
bi-directional loss of BLIP4CIR+Bi.

combine(ref, text) = W_out(h) + lambda * text + (1 - lambda) * ref, with h = MLP([proj_t(text), proj_i(ref)])
and lambda = sigmoid(MLP(...)) a per-query mixing scalar; trained with a batch-wise contrastive loss
against the target image features (logit scale 100). The reversed loss (target + reversed
instruction -> reference) is added with weight alpha. Inputs are L2-normalised so one set of
hyper-parameters serves CLIP models whose raw feature norms differ.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compodiff.atomic import atomic_path
from compodiff.objectives import step_generator
from compodiff.seeding import keeps_global_rng


@dataclass(frozen=True)
class CombinerSpec:
    clip_dim: int
    projection_dim: int
    hidden_dim: int
    dropout: float
    logit_scale: float


class Combiner(nn.Module):
    def __init__(self, spec: CombinerSpec):
        super().__init__()
        self.spec = spec
        d, p, h = spec.clip_dim, spec.projection_dim, spec.hidden_dim
        self.text_projection = nn.Linear(d, p)
        self.image_projection = nn.Linear(d, p)
        self.combiner_layer = nn.Linear(2 * p, h)
        self.output_layer = nn.Linear(h, d)
        self.dynamic_scalar = nn.Sequential(nn.Linear(2 * p, h), nn.ReLU(), nn.Dropout(spec.dropout), nn.Linear(h, 1),
                                            nn.Sigmoid())
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, D) reference image features, (B, D) text features -> (B, D) L2-normalised query."""
        if image.shape != text.shape or image.shape[-1] != self.spec.clip_dim:
            raise ValueError(f"Combiner expects (B, {self.spec.clip_dim}) image and text features, got "
                             f"{tuple(image.shape)} and {tuple(text.shape)}")
        image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
        t = self.dropout(F.relu(self.text_projection(text)))
        i = self.dropout(F.relu(self.image_projection(image)))
        raw = torch.cat([t, i], dim=-1)
        lam = self.dynamic_scalar(raw)
        out = self.output_layer(self.dropout(F.relu(self.combiner_layer(raw)))) + lam * text + (1 - lam) * image
        return F.normalize(out, dim=-1)


def contrastive_loss(query: torch.Tensor, target: torch.Tensor, logit_scale: float) -> torch.Tensor:
    logits = logit_scale * query @ F.normalize(target.float(), dim=-1).T
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


@keeps_global_rng  # it seeds torch's global RNG (init, dropout, sampling)
def train_combiner(model: Combiner, reference: torch.Tensor, target: torch.Tensor, text: torch.Tensor,
                   reversed_text: torch.Tensor | None, alpha: float, steps: int, batch_size: int, lr: float,
                   seed: int, log: Callable[[int, dict], None] | None = None,
                   weight: torch.Tensor | None = None) -> dict:
    """``text`` / ``reversed_text``: pooled CLIP text features of each triplet's instructions. ``weight``:
    per-triplet sampling weights (the denoiser's kind balance), a batch drawn without repeats; None: uniform."""
    n = reference.shape[0]
    if n < 2:
        raise ValueError(f"the contrastive loss needs at least 2 triplets, got {n}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    t0, loss_value = time.perf_counter(), float("nan")
    for step in range(steps):
        g = step_generator(seed, step)
        torch.manual_seed(seed * 7919 + step)
        if weight is None:
            idx = torch.randperm(n, generator=g)[:min(batch_size, n)]
        else:  # without replacement: a repeated row would be its own in-batch negative
            idx = torch.multinomial(weight, min(batch_size, n), replacement=False, generator=g)
        loss = contrastive_loss(model(reference[idx], text[idx]), target[idx], model.spec.logit_scale)
        if reversed_text is not None and alpha > 0:
            loss = loss + alpha * contrastive_loss(model(target[idx], reversed_text[idx]), reference[idx],
                                                   model.spec.logit_scale)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"combiner: loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = loss.item()
        if log is not None and (step % 25 == 0 or step == steps - 1):
            log(step, {"loss": loss_value})
    model.eval()
    seconds = time.perf_counter() - t0
    return {"final_loss": loss_value, "steps": steps, "seconds": seconds,
            "samples_per_second": steps * min(batch_size, n) / max(seconds, 1e-9)}


def save_combiner(model: Combiner, path: str | Path) -> Path:
    from safetensors.torch import save_file

    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(model.state_dict(), str(tmp), metadata={"combiner_spec": json.dumps(asdict(model.spec))})
    return Path(path)


def load_combiner(path: str | Path) -> Combiner:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "combiner_spec" not in meta:
        raise ValueError(f"{path} is not a Combiner checkpoint (no combiner_spec in its metadata)")
    model = Combiner(CombinerSpec(**json.loads(meta["combiner_spec"])))
    model.load_state_dict(load_file(str(path)))
    return model.eval()
