"""The training batches of stage 1 and stage 2 (paper 3.2).

Every task shares the x0 loss ||z - denoiser(z_t, t | conditions)||^2 and differs in its conditions:
  Eq. (1) text -> image:    x0 = z_i,  text = caption,      image = 0,          mask = 0
  Eq. (2) masked conversion: x0 = z_i,  text = caption,      image = z_i,masked, mask = m
  Eq. (3) triplets:          x0 = z_t,  text = instruction,  image = z_i_R,      mask = 0
Each condition is dropped with probability p (text -> "", image -> zeros) except the mask, for
classifier-free guidance. With the bi-directional option, each Eq. (3) row also appears reversed
(x0 = z_i_R, text = reversed instruction, image = z_t) with weight alpha.

All randomness of a step comes from a generator seeded by (seed, step), drawn for the whole global
batch; a process takes its slice. So a resumed run redraws exactly what an uninterrupted one would,
and N processes see the same samples as one process with the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

EQ1, EQ2, EQ3 = 0, 1, 2


@dataclass
class PairFeatures:
    """Image-text pairs (LAION's role): Eq. (1) and Eq. (2)."""

    image: torch.Tensor  # (N, D) raw CLIP image embeddings
    masked: torch.Tensor  # (N, D) embeddings of the image with noise in the masked region
    mask: torch.Tensor  # (N, S, S) {0, 1}
    caption: list[str]

    def __len__(self) -> int:
        return self.image.shape[0]


@dataclass
class TripletFeatures:
    """Filtered SynthTriplets: Eq. (3)."""

    reference: torch.Tensor  # (M, D)
    target: torch.Tensor  # (M, D)
    instruction: list[str]
    reversed_instruction: list[str]
    weight: torch.Tensor | None = None  # (M,) sampling weights (kind_balance_weights); None: uniform
    kind: list[str] | None = None  # each triplet's edit kind, where the data knows it
    source: list[str] | None = None  # each triplet's source: "generated" or a public dataset (triplet_sources)

    def kind_shares(self) -> dict[str, float]:
        """The share of the drawn triplets that each edit kind is expected to take under the weights."""
        return self.shares(self.kind) if self.kind is not None else {}

    def shares(self, labels: list[str]) -> dict[str, float]:
        """The share of the drawn triplets that each label takes under the weights."""
        w = self.weight if self.weight is not None else torch.ones(len(labels), dtype=torch.float64)
        total = float(w.sum())
        shares: dict[str, float] = {}
        for k, x in zip(labels, w.tolist()):
            shares[k] = shares.get(k, 0.0) + x / total
        return dict(sorted(shares.items()))

    def __len__(self) -> int:
        return self.reference.shape[0]


def kind_balance_weights(kinds: list[str], balance: float) -> torch.Tensor | None:
    """Per-triplet sampling weights count(kind)^-balance, so rare edit kinds are drawn more often.

    None (uniform) for a balance of 0 or when every triplet has one kind; negative balances are errors."""
    if balance < 0:
        raise ValueError(f"kind_balance {balance} must be >= 0")
    if balance == 0 or len(set(kinds)) <= 1:
        return None
    _, inverse, counts = np.unique(np.asarray(kinds), return_inverse=True, return_counts=True)
    return torch.from_numpy(counts[inverse].astype(np.float64) ** -balance)


def source_mix_weights(sources: list[str], weights: dict[str, float],
                       within: torch.Tensor | None = None) -> torch.Tensor | None:
    """Per-triplet sampling weights under which source ``s`` takes weights[s] / sum(weights) of the draws,
    a triplet inside its source drawn by ``within`` (the kind balance) or uniformly.

    ``within`` unchanged (None: uniform) when the triplets come from one source."""
    names = list(dict.fromkeys(sources))
    if len(names) <= 1:
        return within
    missing = [n for n in names if n not in weights]
    if missing:
        raise ValueError(f"no mix weight for triplet source(s) {missing}")
    w = within.double() if within is not None else torch.ones(len(sources), dtype=torch.float64)
    src = np.asarray(sources)
    total = sum(weights[n] for n in names)
    out = torch.empty_like(w)
    for n in names:
        sel = torch.from_numpy(src == n)
        out[sel] = w[sel] / w[sel].sum() * (weights[n] / total)
    return out


@dataclass
class Batch:
    x0: torch.Tensor  # (B, D)
    image: torch.Tensor  # (B, D) image condition (zeros = null)
    mask: torch.Tensor  # (B, S, S)
    texts: list[str]
    weight: torch.Tensor  # (B,) loss weight (alpha for reversed rows)
    t: torch.Tensor  # (B,)
    noise: torch.Tensor  # (B, D)
    task: torch.Tensor  # (B,) EQ1 / EQ2 / EQ3 (reversed rows: EQ3)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


def make_batch(step: int, seed: int, batch_size: int, mix: tuple[float, float, float], pairs: PairFeatures | None,
               triplets: TripletFeatures | None, timesteps: int, dropout: float, mask_size: int,
               bidirectional_alpha: float = 0.0) -> Batch:
    """The global batch of ``step``. Rows are [forward rows..., reversed rows...]."""
    g = step_generator(seed, step)
    mix_t = torch.tensor(mix, dtype=torch.float64)
    if (mix_t < 0).any() or mix_t.sum() <= 0:
        raise ValueError(f"task mix {mix} must be non-negative with a positive sum")
    if mix_t[:2].sum() > 0 and (pairs is None or len(pairs) == 0):
        raise ValueError("Eq. (1)/(2) are in the mix but there are no image-text pair features")
    if mix_t[2] > 0 and (triplets is None or len(triplets) == 0):
        raise ValueError("Eq. (3) is in the mix but there are no triplet features")
    task = torch.multinomial(mix_t / mix_t.sum(), batch_size, replacement=True, generator=g)
    n_pairs = len(pairs) if pairs is not None else 1
    n_trip = len(triplets) if triplets is not None else 1
    pair_idx = torch.randint(0, n_pairs, (batch_size,), generator=g)
    if triplets is not None and triplets.weight is not None:
        trip_idx = torch.multinomial(triplets.weight, batch_size, replacement=True, generator=g)
    else:
        trip_idx = torch.randint(0, n_trip, (batch_size,), generator=g)
    drop_text = torch.rand(batch_size, generator=g) < dropout
    drop_image = torch.rand(batch_size, generator=g) < dropout
    dim = (pairs.image if pairs is not None else triplets.reference).shape[1]
    # Gather every row at once (a per-row loop is a fifth of a training step): each row takes its
    # pair or its triplet; a row of another task reads index 0 and is overwritten by the where.
    is_pair = task != EQ3
    is_eq2 = task == EQ2
    if pairs is not None:
        p_img = pairs.image[pair_idx]
        p_masked = pairs.masked[pair_idx]
    else:
        p_img = p_masked = torch.zeros(batch_size, dim)
    if triplets is not None:
        t_tgt, t_ref = triplets.target[trip_idx], triplets.reference[trip_idx]
    else:
        t_tgt = t_ref = torch.zeros(batch_size, dim)
    x0 = torch.where(is_pair[:, None], p_img, t_tgt)
    image = torch.where(is_eq2[:, None], p_masked, torch.where(is_pair[:, None], torch.zeros_like(t_ref), t_ref))
    mask = torch.zeros(batch_size, mask_size, mask_size)
    eq2_rows = is_eq2.nonzero().flatten()
    if len(eq2_rows):
        mask[eq2_rows] = _resize(pairs.mask[pair_idx[eq2_rows]], mask_size)
    texts = [pairs.caption[int(pair_idx[i])] if k != EQ3 else triplets.instruction[int(trip_idx[i])]
             for i, k in enumerate(task.tolist())]
    rows_x0, rows_img, rows_mask, rows_txt, rows_task = [x0], [image], [mask], texts, [task]
    weight = [torch.ones(batch_size)]
    rev = (task == EQ3).nonzero().flatten() if bidirectional_alpha > 0 else torch.zeros(0, dtype=torch.long)
    if len(rev):
        j = trip_idx[rev]
        rows_x0.append(triplets.reference[j])
        rows_img.append(triplets.target[j])
        rows_mask.append(torch.zeros(len(rev), mask_size, mask_size))
        rows_txt = rows_txt + [triplets.reversed_instruction[int(x)] for x in j]
        rows_task.append(torch.full((len(rev),), EQ3))
        # L = mean over the forward rows + alpha * mean over the reversed rows; the loss is
        # sum(weight * mse) / batch_size, so a reversed row weighs alpha * batch_size / n_rev
        weight.append(torch.full((len(rev),), float(bidirectional_alpha) * batch_size / len(rev)))
        drop_text = torch.cat([drop_text, torch.rand(len(rev), generator=g) < dropout])
        drop_image = torch.cat([drop_image, torch.rand(len(rev), generator=g) < dropout])
    x0, image, mask = torch.cat(rows_x0), torch.cat(rows_img), torch.cat(rows_mask)
    texts = ["" if d else s for s, d in zip(rows_txt, drop_text.tolist())]  # null text = encoding of ""
    image = torch.where(drop_image[:, None], torch.zeros_like(image), image)  # null image = zeros; mask kept
    n = x0.shape[0]
    t = torch.randint(0, timesteps, (n,), generator=g)
    noise = torch.randn(n, dim, generator=g)
    return Batch(x0, image, mask, texts, torch.cat(weight), t, noise, torch.cat(rows_task))


def _resize(m: torch.Tensor, size: int) -> torch.Tensor:
    """(N, S, S) masks -> (N, size, size) {0, 1} floats."""
    if m.shape[-1] == size:
        return m.float()
    return (torch.nn.functional.interpolate(m[:, None].float(), size=(size, size), mode="bilinear",
                                            align_corners=False)[:, 0] > 0.5).float()


def shard_rows(n: int, rank: int, world: int) -> slice:
    """This process's contiguous slice of a global batch of n rows. Slices may differ by one row:
    each process divides its summed loss by the global batch size, and DDP averages over processes,
    so the gradient is the single-process one either way."""
    bounds = np.linspace(0, n, world + 1).astype(int)
    return slice(int(bounds[rank]), int(bounds[rank + 1]))
