"""The world CLIP: trained, saved in open_clip's local-dir layout, loaded by the one loader."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compodiff.encoders import EncoderError, load_encoder
from datagen.shards import decode_png
from datagen.world.clip_training import normalise_pixels, retrieval_recall, train_clip
from datagen.world.pairs import make_pairs
from orchestration.params import load_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    p = load_params(ROOT / "profiles" / "tiny.yaml")
    cols = make_pairs(p.world, 0, "s00", 64)
    images = np.stack([decode_png(b) for b in cols["image_png"]])
    out = tmp_path_factory.mktemp("enc")
    summary = train_clip(p.encoder.train, images, cols["caption"], p.world.image_size, 0, out)
    return out, images, cols["caption"], summary


def test_saved_encoder_loads_through_open_clip_local_dir(trained):
    out, images, captions, summary = trained
    assert (out / "open_clip_config.json").is_file() and (out / "open_clip_model.safetensors").is_file()
    enc = load_encoder(f"local-dir:{out}")
    assert enc.embed_dim == 32 and enc.image_size == 32 and enc.context_length == 32
    emb = enc.encode_images(images[:5])
    assert emb.shape == (5, 32) and torch.isfinite(emb).all()
    assert np.isfinite(summary["final_loss"])


def test_fast_pixel_path_equals_open_clip_preprocess(trained):
    out, images, _, _ = trained
    enc = load_encoder(f"local-dir:{out}")
    slow = torch.stack([enc.preprocess(Image.fromarray(im)) for im in images[:4]])
    torch.testing.assert_close(enc.pixels(images[:4]), slow, atol=1e-5, rtol=0)
    torch.testing.assert_close(normalise_pixels(images[:4]), slow, atol=1e-5, rtol=0)


def test_text_tokens_are_per_token_states_after_the_final_norm(trained):
    out, _, captions, _ = trained
    enc = load_encoder(f"local-dir:{out}")
    states, real = enc.text_tokens(captions[:3])
    assert states.shape == (3, 32, 32) and real.dtype == torch.bool
    # the pooled embedding is the EOT state projected: per-token states are consistent with it
    tokens = enc.tokenize(captions[:3])
    eot = tokens.argmax(-1)
    pooled = states[torch.arange(3), eot] @ enc.model.text_projection
    torch.testing.assert_close(pooled, enc.encode_text(captions[:3]), atol=1e-5, rtol=1e-4)
    # hiding padding inside the tower changes padding positions only
    masked, _ = enc.text_tokens(captions[:3], pad_mask=True)
    torch.testing.assert_close(masked[real], states[real], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(masked[~real], states[~real])


def test_recall_is_computed_against_brute_force(trained):
    out, images, captions, _ = trained
    r = retrieval_recall(out, images, captions, ks=(1, 5))
    enc = load_encoder(f"local-dir:{out}")
    img = torch.nn.functional.normalize(enc.encode_images(images), dim=-1)
    txt = torch.nn.functional.normalize(enc.encode_text(captions), dim=-1)
    top5 = (txt @ img.T).topk(5, dim=1).indices
    brute = np.mean([i in top5[i].tolist() for i in range(len(captions))])
    assert r["t2i_R@5"] == pytest.approx(brute)


def test_loader_refuses_missing_or_weightless_models(tmp_path):
    with pytest.raises(EncoderError, match="open_clip_config.json not found"):
        load_encoder(f"local-dir:{tmp_path}")
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(EncoderError, match="no weights file"):
        load_encoder(f"local-dir:{tmp_path}")
