"""The string-level pipeline: open_clip text tower -> tokens, null and negative texts; the x0 loss."""

import open_clip
import pytest
import torch
import torch.nn.functional as F

import compodiff
from compodiff.diffusion import CosineSchedule, x0_loss
from compodiff.encoders import Encoder


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    clip = open_clip.model.CLIP(embed_dim=32, vision_cfg={"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
                                text_cfg={"context_length": 16, "vocab_size": 49408, "width": 24, "heads": 2,
                                          "layers": 1}).eval()
    enc = Encoder(clip, None, open_clip.tokenizer.SimpleTokenizer(context_length=16), "tiny-clip")
    return compodiff.CompoDiffPipeline(compodiff.build_denoiser("tiny"), encoder=enc)


def test_negative_text_replaces_the_null_text(pipe):
    ref = torch.randn(2, 32)
    texts, negatives = ["make it red", "add a star"], ["blue", "circle"]
    got = pipe.compose(ref, texts, negative_texts=negatives, steps=3, seed=0)
    want = pipe.compose_tokens(ref, pipe.encode_text(texts), pipe.encode_text(negatives), steps=3, seed=0)
    assert torch.equal(got, want)
    plain = pipe.compose(ref, texts, steps=3, seed=0)  # null text = the encoding of ""
    assert torch.equal(plain, pipe.compose_tokens(ref, pipe.encode_text(texts), pipe.encode_text(["", ""]),
                                                  steps=3, seed=0))
    assert not torch.allclose(got, plain)


def test_padding_options(pipe):
    cond = pipe.encode_text(["a star"])
    assert cond.tokens.shape == (1, 16, 24) and cond.mask is None  # attend to padding, as released
    pipe.attend_padding = False
    try:
        masked = pipe.encode_text(["a star"])
        assert masked.mask.sum().item() == 4  # <start> a star <end>
    finally:
        pipe.attend_padding = True


def test_text_to_image_uses_zero_image_and_zero_mask(pipe):
    out = pipe.text_to_image(["a red star"], steps=2, seed=1)
    zeros = torch.zeros(1, 32)
    assert torch.equal(out, pipe.compose(zeros, ["a red star"], steps=2, seed=1, masks=torch.zeros(1, 8, 8)))


def test_x0_loss_is_the_mse_to_x0_through_q_sample():
    torch.manual_seed(0)
    net = compodiff.build_denoiser("tiny")
    sched = CosineSchedule(100)
    x0, eps, t = torch.randn(4, 32), torch.randn(4, 32), torch.tensor([0, 10, 50, 99])
    ctx = net.context(torch.randn(4, 5, 24), torch.randn(4, 32), torch.zeros(4, 8, 8))
    loss = x0_loss(net, sched, x0, ctx, t, eps)
    x_t = sched.alpha_bar[t].sqrt()[:, None] * x0 + (1 - sched.alpha_bar[t]).sqrt()[:, None] * eps
    assert loss.item() == pytest.approx(F.mse_loss(net.denoise(x_t, t, ctx), x0).item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if "rotary" not in n)
