"""Checkpoints: the release's file format, our safetensors round trip, and refusals."""

import pickle

import pytest
import torch

import compodiff
from compodiff import CheckpointError, load_checkpoint, load_official_checkpoint, save_checkpoint
from compodiff.diffusion import CosineSchedule
from tests.test_denoiser import official_shapes, tiny_inputs


def release_state(net, prefix="model.net."):
    """A state dict laid out like the released pytorch_model.bin (with its schedule buffers)."""
    state = {prefix + k: v.clone() for k, v in net.state_dict().items()}
    s = CosineSchedule(net.config.timesteps)
    state["model.noise_scheduler.betas"] = s.betas.clone()
    state["model.noise_scheduler.alphas_cumprod"] = s.alpha_bar.clone()
    return state


def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    net = compodiff.build_denoiser("tiny").eval()
    inp = tiny_inputs()
    path = save_checkpoint(net, tmp_path / "den.safetensors", {"step": 7})
    back = load_checkpoint(path)
    assert back.config == net.config
    assert torch.equal(back(**inp), net(**inp))
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write leaves no temp file


SAVE = """
import sys, torch, compodiff
torch.manual_seed(0)
compodiff.save_checkpoint(compodiff.build_denoiser("tiny"), sys.argv[1], {"step": 7, "loss": 0.5, "mix": [1, 2]})
"""


def test_the_same_weights_give_the_same_bytes_in_every_process(tmp_path):
    import subprocess
    import sys

    from compodiff.checkpoint import CONFIG_KEY, checkpoint_metadata

    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", SAVE, str(tmp_path / f"{name}.safetensors")], check=True, timeout=120)
    data = [(tmp_path / f"{n}.safetensors").read_bytes() for n in "abc"]
    assert data[0] == data[1] == data[2]
    meta = checkpoint_metadata(tmp_path / "a.safetensors")
    assert meta["step"] == 7 and meta["mix"] == [1, 2] and meta[CONFIG_KEY]["depth"] > 0


def test_a_checkpoint_with_one_header_key_per_value_still_loads(tmp_path):
    import json

    from safetensors.torch import save_file

    from compodiff.checkpoint import CONFIG_KEY, checkpoint_metadata

    net = compodiff.build_denoiser("tiny").eval()
    state = {k: v.contiguous().clone() for k, v in net.state_dict().items()}
    save_file(state, str(tmp_path / "old.safetensors"), metadata={
        CONFIG_KEY: json.dumps(net.config.to_dict()), "step": "7"})
    assert load_checkpoint(tmp_path / "old.safetensors").config == net.config
    assert checkpoint_metadata(tmp_path / "old.safetensors")["step"] == 7


@pytest.mark.parametrize("prefix", ["model.net.", "model.", "net.", ""])
def test_release_format_loads_with_any_prefix(tmp_path, prefix):
    torch.manual_seed(0)
    net = compodiff.build_denoiser("tiny").eval()
    path = tmp_path / "pytorch_model.bin"
    torch.save(release_state(net, prefix), path)
    (tmp_path / "config.json").write_text('{"timesteps": 100}')
    back = load_official_checkpoint(tmp_path)
    assert back.config == net.config
    inp = tiny_inputs()
    assert torch.equal(back(**inp), net(**inp))


def test_official_size_release_file_loads(tmp_path):
    """Every key of the released checkpoint, at its shape, through torch.load(weights_only=True)."""
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) * 0.02 for k, s in official_shapes().items()}
    state = {k: (v.abs() + 1 if k.endswith(".g") else v) for k, v in state.items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(
        '{"embed_dim": 768, "model_depth": 12, "model_dim": 64, "model_heads": 16, "timesteps": 1000}')
    net = load_official_checkpoint(tmp_path / "pytorch_model.bin")
    assert net.config == compodiff.preset("official")
    key = "transformer.layers.3.1.to_kv.weight"
    assert torch.equal(net.state_dict()[key], state["model.net." + key])


def test_missing_unexpected_and_misshapen_keys_are_refused(tmp_path):
    net = compodiff.build_denoiser("tiny")
    state = release_state(net)
    missing = dict(state)
    del missing["model.net.transformer.layers.1.2.5.weight"]
    torch.save(missing, tmp_path / "a.bin")
    with pytest.raises(CheckpointError, match=r"missing key\(s\): transformer.layers.1.2.5.weight"):
        load_official_checkpoint(tmp_path / "a.bin")
    extra = {**state, "model.net.surprise.weight": torch.zeros(2)}
    torch.save(extra, tmp_path / "b.bin")
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): surprise.weight"):
        load_official_checkpoint(tmp_path / "b.bin")
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_official_checkpoint(tmp_path / "a.bin", config=compodiff.preset("tiny", ff_mult=2))


class NotAStateDict:
    pass


def test_a_pickle_that_is_not_a_plain_state_dict_is_refused(tmp_path):
    with open(tmp_path / "evil.bin", "wb") as f:
        pickle.dump(NotAStateDict(), f)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_official_checkpoint(tmp_path / "evil.bin")
    torch.save({"a": 1, "b": "text"}, tmp_path / "notensors.bin")
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        load_official_checkpoint(tmp_path / "notensors.bin")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_official_checkpoint(tmp_path / "absent.bin")


def test_t5_variant_end_to_end(tmp_path):
    """A tiny random T5 saved and loaded through from_pretrained, projected next to the CLIP tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from compodiff.text_t5 import T5TextEncoder

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", "a", "red", "star", "blue", "circle"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(tmp_path / "t5")
    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=8, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
                   ).save_pretrained(tmp_path / "t5")
    t5 = T5TextEncoder(tmp_path / "t5", max_length=6)
    tokens, mask = t5.text_tokens(["a red star", "blue circle"])
    assert tokens.shape == (2, 6, 16) and mask.sum(1).tolist() == [3, 2]
    net = compodiff.build_denoiser("tiny", text2_dim=t5.width)
    pipe = compodiff.CompoDiffPipeline(net, text_encoder2=t5)
    ref = torch.randn(2, 32)
    text = compodiff.TextConditions(torch.randn(2, 5, 24), None, tokens, mask)
    null = compodiff.TextConditions(torch.randn(2, 5, 24), None, *t5.text_tokens(["", ""]))
    out = pipe.compose_tokens(ref, text, null, steps=2, seed=0)
    assert out.shape == (2, 32) and torch.isfinite(out).all()
