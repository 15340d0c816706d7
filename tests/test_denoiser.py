"""The denoising transformer: the release's layout, its building blocks against oracles, input checks."""

from pathlib import Path

import pytest
import torch
from rotary_embedding_torch import RotaryEmbedding

import compodiff
from compodiff.denoiser import Rotary

KEYS = Path(__file__).parent / "data" / "official_checkpoint_keys.txt"


def official_shapes() -> dict[str, tuple]:
    out = {}
    for line in KEYS.read_text().splitlines():
        key, shape = line.split(" ", 1)
        out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def test_official_state_dict_has_the_release_keys_and_shapes():
    net = compodiff.build_denoiser("official")
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    release = {k[len("model.net."):]: s for k, s in official_shapes().items() if k.startswith("model.net.")}
    assert ours == release
    assert sum(p.numel() for p in net.parameters()) == 140_043_792  # the release's parameter count


def test_rotary_matches_the_rotary_embedding_torch_library():
    lib, ours = RotaryEmbedding(dim=32), Rotary(32)
    assert torch.allclose(lib.freqs, ours.freqs)
    q, k = torch.randn(3, 16, 2, 64), torch.randn(3, 2, 64)
    torch.testing.assert_close(ours(q), lib.rotate_queries_or_keys(q))
    torch.testing.assert_close(ours(k), lib.rotate_queries_or_keys(k))


def test_relative_bias_only_marks_time_token_against_null_key():
    net = compodiff.build_denoiser("tiny")
    rel = net.transformer.rel_pos_bias
    with torch.no_grad():
        rel.relative_attention_bias.weight.copy_(torch.arange(32.0)[:, None].expand(32, net.config.heads))
    bias = rel(2, 3, "cpu")[0]  # bucket index per (query, key)
    assert bias.tolist() == [[0, 0, 0], [1, 0, 0]]


def tiny_inputs(b=3, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = compodiff.preset("tiny")
    return dict(
        x_t=torch.randn(b, cfg.embed_dim, generator=g),
        t=torch.tensor([0, 37, 99][:b]),
        text_tokens=torch.randn(b, length, cfg.text_dim, generator=g),
        ref_image_embed=torch.randn(b, cfg.embed_dim, generator=g),
        mask_map=(torch.rand(b, cfg.mask_size, cfg.mask_size, generator=g) > 0.5).float(),
    )


def test_cached_context_equals_full_forward():
    torch.manual_seed(0)
    net = compodiff.build_denoiser("tiny").eval()
    inp = tiny_inputs()
    full = net(**inp)
    ctx = net.context(inp["text_tokens"], inp["ref_image_embed"], inp["mask_map"])
    torch.testing.assert_close(net.denoise(inp["x_t"], inp["t"], ctx), full)
    assert full.shape == (3, net.config.embed_dim)


def test_text_mask_equals_dropping_the_masked_tokens():
    torch.manual_seed(0)
    net = compodiff.build_denoiser("tiny").eval()
    inp = tiny_inputs(length=6)
    mask = torch.tensor([[True] * 4 + [False] * 2] * 3)
    masked = net(**inp, text_mask=mask)
    dropped = net(**{**inp, "text_tokens": inp["text_tokens"][:, :4]})
    torch.testing.assert_close(masked, dropped)
    assert not torch.allclose(masked, net(**inp))  # without the mask, padding is attended (as released)


def test_batch_rows_are_independent():
    torch.manual_seed(0)
    net = compodiff.build_denoiser("tiny").eval()
    inp = tiny_inputs()
    full = net(**inp)
    one = net(**{k: v[1:2] for k, v in inp.items()})
    torch.testing.assert_close(one, full[1:2])


@pytest.mark.parametrize("name,bad,match", [
    ("ref_image_embed", torch.randn(3, 31), "ref_image_embed has shape"),
    ("mask_map", torch.zeros(3, 64, 64), "mask_map has shape"),
    ("text_tokens", torch.randn(3, 5, 23), "text_tokens has shape"),
    ("x_t", torch.randn(3, 33), "x_t has shape"),
])
def test_wrong_shapes_are_clear_errors(name, bad, match):
    net = compodiff.build_denoiser("tiny")
    inp = tiny_inputs()
    inp[name] = bad
    with pytest.raises(ValueError, match=match):
        net(**inp)


def test_second_text_encoder_tokens_are_concatenated():
    torch.manual_seed(0)
    net = compodiff.build_denoiser("tiny", text2_dim=12).eval()
    inp = tiny_inputs()
    t5 = torch.randn(3, 7, 12)
    out = net(**inp, text2_tokens=t5)
    assert out.shape == (3, 32)
    assert not torch.allclose(out, net(**inp, text2_tokens=torch.zeros_like(t5)))
    with pytest.raises(ValueError, match="second text encoder"):
        net(**inp)
