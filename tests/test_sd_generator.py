"""Stable Diffusion pairs with self-attention injection, on a tiny random pipeline saved to disk and
loaded back through the same from_pretrained code that loads SD 1.5."""

import numpy as np
import pytest
import torch

from datagen.config import DiffusersConfig
from datagen.image_pairs import PairRequest, sample_parameters
from datagen.sd_generator import StableDiffusionPairGenerator, generate_pairs, install_injection, load_pipeline
from datagen.sd_random import random_pipeline

STEPS, RES = 5, 64


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sd")
    random_pipeline("tiny", d).save_pretrained(d / "pipe")
    return d / "pipe"


@pytest.fixture(scope="module")
def loaded(sd_dir):
    torch.set_num_threads(1)
    pipe = load_pipeline(sd_dir, torch.device("cpu"), fp16=True)  # fp16 is for GPUs: fp32 on CPU
    # Random weights leave self-attention too weak to shape the image; strengthen it so the
    # effect of the injection is visible (a trained UNet's layout lives in these maps).
    with torch.no_grad():
        for name, m in pipe.unet.named_modules():
            if name.endswith("attn1"):
                m.to_q.weight.mul_(4)
                m.to_k.weight.mul_(4)
                m.to_out[0].weight.mul_(30)
    return pipe, install_injection(pipe.unet)


def _pairs(loaded, p, seeds=(11, 12), refs=("a red star on grass", "a blue cube"),
           tgts=("a green star on grass", "a blue ball")):
    pipe, proc = loaded
    return generate_pairs(pipe, proc, list(refs), list(tgts), list(seeds), list(p), [7.5, 12.0][:len(refs)], STEPS, RES)


def test_injection_off_equals_the_default_attention(sd_dir):
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe = load_pipeline(sd_dir, torch.device("cpu"), fp16=False)
    x, t = torch.randn(4, 4, 32, 32), torch.tensor(500)
    ctx = torch.randn(4, 77, 32)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    reference = pipe.unet(x, t, encoder_hidden_states=ctx).sample
    proc = install_injection(pipe.unet)
    assert proc.gate is None
    torch.testing.assert_close(pipe.unet(x, t, encoder_hidden_states=ctx).sample, reference)


def test_source_unchanged_by_p_and_target_changed(loaded):
    src_a, tgt_a = _pairs(loaded, [0.0, 0.0])
    src_b, tgt_b = _pairs(loaded, [0.8, 0.5])
    assert src_a.shape == (2, RES, RES, 3) and src_a.dtype == np.uint8
    np.testing.assert_array_equal(src_a, src_b)  # the source never sees the target
    for i in range(2):
        assert np.abs(tgt_a[i].astype(int) - tgt_b[i].astype(int)).max() > 3  # p > 0 changes the target


def test_p_zero_is_two_independent_images_with_shared_noise(loaded):
    _, tgt = _pairs(loaded, [0.0, 0.0])
    # the target caption generated as a source, with the same seed: the same image
    alone, _ = _pairs(loaded, [0.0, 0.0], refs=("a green star on grass", "a blue ball"), tgts=("x", "y"))
    assert np.abs(tgt.astype(int) - alone.astype(int)).max() <= 1


def test_full_injection_pulls_the_target_towards_the_source(loaded):
    src0, tgt0 = _pairs(loaded, [0.0, 0.0])
    src1, tgt1 = _pairs(loaded, [1.0, 1.0])
    d0 = np.abs(src0.astype(int) - tgt0.astype(int)).mean()
    d1 = np.abs(src1.astype(int) - tgt1.astype(int)).mean()
    assert d1 < 0.7 * d0


def test_deterministic_and_independent_of_batch_neighbours(loaded):
    a = _pairs(loaded, [0.4, 0.6])
    b = _pairs(loaded, [0.4, 0.6])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    single = _pairs(loaded, [0.4], seeds=(11,), refs=("a red star on grass",), tgts=("a green star on grass",))
    assert np.abs(single[1][0].astype(int) - a[1][0].astype(int)).max() <= 1


def test_generator_interface_draws_p_and_guidance_from_the_seed(sd_dir):
    cfg = DiffusersConfig(checkpoints=(str(sd_dir),), steps=3, resolution=RES, p_range=(0.1, 0.9),
                          guidance_range=(7.5, 15.0), batch_pairs=2, fp16=True)
    gen = StableDiffusionPairGenerator(cfg, device="cpu")
    reqs = [PairRequest(f"t{i}", "a red star", "make it green", "a green star", "llm", None, None, -1, 0, 100 + i)
            for i in range(3)]
    out = gen.generate(reqs)
    for r, res in zip(reqs, out):
        assert (res.p, res.guidance) == sample_parameters(r.seed, (0.1, 0.9), (7.5, 15.0))
        assert 0.1 <= res.p <= 0.9 and 7.5 <= res.guidance <= 15 and res.checkpoint == str(sd_dir)
        assert res.images[0].shape == (RES, RES, 3)


def test_a_directory_that_does_not_load_names_it(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken"):
        load_pipeline(tmp_path / "broken", torch.device("cpu"), False)


def test_nan_latents_stop_with_the_pair(sd_dir):
    pipe = load_pipeline(sd_dir, torch.device("cpu"), False)
    proc = install_injection(pipe.unet)
    with torch.no_grad():
        pipe.unet.conv_out.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="step 0"):
        generate_pairs(pipe, proc, ["a"], ["b"], [1], [0.5], [7.5], STEPS, RES)
    assert proc.gate is None  # the gate never outlives a failed batch


def test_injection_equals_copying_the_source_attention_scores():
    """IP2P copies the source's pre-softmax scores; copying its query and key is the same thing."""
    from diffusers.models.attention_processor import Attention

    from datagen.sd_generator import InjectionProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    proc = InjectionProcessor()
    x = torch.randn(2 * 2 * 2, 5, 16)  # [cfg halves] x [2 pairs] x (source, target)
    proc.gate = torch.tensor([True, False])
    out = proc(attn, x)
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)

    def heads(t):
        return t.view(t.shape[0], 5, 2, 8).transpose(1, 2)

    for half in (0, 4):
        src, tgt = half, half + 1  # pair 0: gated
        scores = heads(q)[src] @ heads(k)[src].transpose(-1, -2) / 8 ** 0.5
        manual = (scores.softmax(-1) @ heads(v)[tgt]).transpose(0, 1).reshape(5, 16)
        torch.testing.assert_close(out[tgt], attn.to_out[0](manual), rtol=1e-5, atol=1e-5)
        plain = InjectionProcessor()(attn, x)
        torch.testing.assert_close(out[half + 2:half + 4], plain[half + 2:half + 4])  # pair 1: not gated
        torch.testing.assert_close(out[src], plain[src])
