"""Stage batches, the training loop, exact resume, divergence, and DDP with gloo against one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compodiff.denoiser import CompoDiffDenoiser, preset
from compodiff.objectives import EQ2, EQ3, PairFeatures, TripletFeatures, kind_balance_weights, make_batch
from compodiff.training import TrainingDiverged, TrainSpec, train_denoiser

CFG = preset("tiny")
D, S = CFG.embed_dim, CFG.mask_size


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, D, generator=g)
    masks = torch.rand(n, 16, 16, generator=g) > 0.7
    pairs = PairFeatures(image, image + 0.1 * torch.randn(n, D, generator=g), masks,
                         [f"caption {i % 7}" for i in range(n)])
    ref = torch.randn(n, D, generator=g)
    trip = TripletFeatures(ref, -ref, [f"edit {i % 5}" for i in range(n)], [f"undo: edit {i % 5}" for i in range(n)])
    return pairs, trip


def fake_tokens(texts):
    """A deterministic stand-in for the text tower: one embedding per character."""
    out = torch.zeros(len(texts), 6, CFG.text_dim)
    for i, t in enumerate(texts):
        for j, ch in enumerate(t[:6]):
            out[i, j, ord(ch) % CFG.text_dim] = 1.0
    return out


def spec(**kw):
    base = dict(stage="stage2", steps=6, batch_size=8, lr=1e-3, warmup_steps=2, mix=(0.3, 0.3, 0.4), weight_decay=0.06,
                ema_decay=0.99, grad_clip=1.0, condition_dropout=0.1, bf16=False, checkpoint_every=3, seed=0)
    return TrainSpec(**{**base, **kw})


def fresh():
    torch.manual_seed(0)
    return CompoDiffDenoiser(CFG)


def test_batches_follow_the_mix_and_drop_conditions_but_never_the_mask():
    pairs, trip = data()
    b = make_batch(0, 0, 4000, (0.3, 0.3, 0.4), pairs, trip, CFG.timesteps, 0.1, S)
    share = torch.bincount(b.task, minlength=3).float() / 4000
    assert torch.allclose(share, torch.tensor([0.3, 0.3, 0.4]), atol=0.03)
    eq2 = b.task == EQ2
    assert (b.mask[eq2].flatten(1).sum(1) > 0).float().mean() > 0.95  # masks kept, even with the image dropped
    assert (b.mask[~eq2] == 0).all()  # all-zero mask where a task has none
    null_img = (b.image == 0).all(1)
    assert 0.05 < null_img[b.task == EQ3].float().mean() < 0.15
    assert 0.05 < sum(t == "" for t in b.texts) / 4000 < 0.15
    again = make_batch(0, 0, 4000, (0.3, 0.3, 0.4), pairs, trip, CFG.timesteps, 0.1, S)
    assert torch.equal(b.x0, again.x0) and b.texts == again.texts  # a pure function of (seed, step)


def test_bidirectional_rows_swap_reference_and_target_with_weight_alpha():
    pairs, trip = data()
    b = make_batch(3, 0, 200, (0.0, 0.0, 1.0), pairs, trip, CFG.timesteps, 0.0, S, bidirectional_alpha=0.5)
    assert b.x0.shape[0] == 400 and torch.allclose(b.weight[200:], torch.full((200,), 0.5))
    assert torch.equal(b.x0[200:], b.image[:200]) and torch.equal(b.image[200:], b.x0[:200])
    assert all(r.startswith("undo: ") for r in b.texts[200:])


def test_kind_balance_draws_rare_edit_kinds_as_often_as_common_ones():
    pairs, trip = data(n=100)
    kinds = ["replace"] * 90 + ["colour"] * 10
    assert kind_balance_weights(kinds, 0.0) is None and kind_balance_weights(["x"] * 5, 1.0) is None
    with pytest.raises(ValueError, match="kind_balance"):
        kind_balance_weights(kinds, -1.0)
    rows = {}
    for balance in (0.0, 0.5, 1.0):
        trip.weight = kind_balance_weights(kinds, balance)
        b = make_batch(0, 0, 20000, (0.0, 0.0, 1.0), pairs, trip, CFG.timesteps, 0.0, S)
        # a triplet is known by its reference row: rows 90.. are the colour edits
        picked = (b.image[:, None, :] == trip.reference[None]).all(-1).float().argmax(1)
        rows[balance] = float((picked >= 90).float().mean())
    # uniform: 10%; count^-0.5: 10/sqrt(10) vs 90/sqrt(90), 25%; count^-1: one half
    assert abs(rows[0.0] - 0.10) < 0.01 and abs(rows[0.5] - 0.25) < 0.015 and abs(rows[1.0] - 0.5) < 0.015


def test_training_lowers_the_loss_and_leaves_the_callers_rng_alone(tmp_path):
    pairs, trip = data()
    losses, model = [], fresh()
    before = torch.get_rng_state()
    train_denoiser(model, spec(steps=150, batch_size=32, mix=(0.0, 0.0, 1.0), condition_dropout=0.0,
                                 checkpoint_every=1000, lr=3e-3),
                   pairs, trip, fake_tokens, tmp_path, log=lambda s, m: losses.append(m["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert torch.equal(torch.get_rng_state(), before)  # it seeds each step inside its own RNG scope


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    pairs, trip = data()
    a = fresh()
    train_denoiser(a, spec(), pairs, trip, fake_tokens, tmp_path / "a")
    b = fresh()
    train_denoiser(b, spec(), pairs, trip, fake_tokens, tmp_path / "b", stop_after=4)  # killed after step 4
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] == 3  # last checkpoint: step 3
    c = fresh()  # a new process: fresh weights, everything comes from the checkpoint
    out = train_denoiser(c, spec(), pairs, trip, fake_tokens, tmp_path / "b")
    assert out["resumed_from"] == 3
    again = train_denoiser(fresh(), spec(), pairs, trip, fake_tokens, tmp_path / "b")  # already finished
    assert again["resumed_from"] == 6 and again["final_loss"] == out["final_loss"]
    for (k, x), y in zip(a.state_dict().items(), c.state_dict().values()):
        torch.testing.assert_close(x, y, msg=k)
    sa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    sc = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k in sa["ema"]["model"]:
        torch.testing.assert_close(sa["ema"]["model"][k], sc["ema"]["model"][k])


def test_resume_from_an_incompatible_checkpoint_is_refused(tmp_path):
    pairs, trip = data()
    train_denoiser(fresh(), spec(steps=3), pairs, trip, fake_tokens, tmp_path)
    with pytest.raises(ValueError, match="lr"):
        train_denoiser(fresh(), spec(steps=6, lr=5e-4), pairs, trip, fake_tokens, tmp_path)
    other = CompoDiffDenoiser(preset("tiny", depth=1))
    with pytest.raises(ValueError, match="denoiser"):
        train_denoiser(other, spec(steps=6), pairs, trip, fake_tokens, tmp_path)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    pairs, trip = data()
    train_denoiser(fresh(), spec(steps=3, mix=(1.0, 0.0, 0.0)), pairs, trip, fake_tokens, tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(TrainingDiverged, match="at step 3.*last.pt"):
        train_denoiser(fresh(), spec(steps=6, mix=(1.0, 0.0, 0.0)), _nan_pairs(pairs), trip, fake_tokens, tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == before


def _nan_pairs(pairs):
    image = pairs.image.clone()
    image[:] = float("nan")
    return PairFeatures(image, pairs.masked, pairs.mask, pairs.caption)


WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.timeout(300)
@pytest.mark.slow  # two torchrun processes
def test_two_processes_with_gloo_match_one_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    torchrun = Path(sys.executable).with_name("torchrun")
    for procs in (1, 2):
        subprocess.run([str(torchrun), "--standalone", f"--nproc_per_node={procs}", str(WORKER),
                        str(tmp_path / str(procs))], check=True, env=env, capture_output=True, timeout=240)
    one = torch.load(tmp_path / "1" / "weights.pt", weights_only=True)
    two = torch.load(tmp_path / "2" / "weights.pt", weights_only=True)
    for k in one:
        torch.testing.assert_close(one[k], two[k], rtol=1e-4, atol=1e-5, msg=k)
    assert json.loads((tmp_path / "2" / "summary.json").read_text())["world_size"] == 2
