"""The Combiner baseline: it learns a composition, draws its batches by the kind weights it is given,
and refuses what it cannot train on."""

import pytest
import torch

from compodiff.combiner import Combiner, CombinerSpec, train_combiner


def triplets(n=256, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref, text = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    return ref, torch.nn.functional.normalize(ref + text, dim=-1), text


def test_training_learns_the_composition():
    ref, tgt, text = triplets()
    torch.manual_seed(0)
    model = Combiner(CombinerSpec(16, 32, 64, 0.0, 20.0))
    summary = train_combiner(model, ref, tgt, text, None, 0.0, 300, 64, 3e-3, 0)
    with torch.no_grad():
        sims = torch.nn.functional.normalize(model(ref, text), dim=-1) @ tgt.T
    assert (sims.argmax(1) == torch.arange(len(ref))).float().mean() > 0.9
    assert summary["steps"] == 300


def test_weighted_batches_come_from_the_weighted_rows_without_repeats(monkeypatch):
    ref, tgt, text = triplets(n=100)
    weight = torch.zeros(100, dtype=torch.float64)
    weight[:40] = 1.0  # only the first 40 triplets may be drawn
    seen = []
    import compodiff.combiner as combiner

    real = combiner.contrastive_loss

    def spy(query, target, scale):
        rows = [int((tgt == t).all(1).nonzero()[0]) for t in target]
        seen.append(rows)
        return real(query, target, scale)

    monkeypatch.setattr(combiner, "contrastive_loss", spy)
    model = Combiner(CombinerSpec(16, 32, 64, 0.0, 20.0))
    train_combiner(model, ref, tgt, text, None, 0.0, 5, 32, 1e-3, 0, weight=weight)
    assert all(max(r) < 40 and len(set(r)) == len(r) == 32 for r in seen)


def test_too_few_triplets_is_refused():
    ref, tgt, text = triplets(n=1)
    with pytest.raises(ValueError, match="at least 2 triplets"):
        train_combiner(Combiner(CombinerSpec(16, 32, 64, 0.0, 20.0)), ref, tgt, text, None, 0.0, 1, 8, 1e-3, 0)


def test_training_leaves_the_callers_global_rng_as_it_was():
    ref, tgt, text = triplets(n=64)
    model = Combiner(CombinerSpec(16, 32, 64, 0.3, 20.0))  # dropout draws from the global RNG
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_combiner(model, ref, tgt, text, None, 0.0, 3, 16, 1e-3, 0)
    assert torch.equal(torch.rand(3), expected)
