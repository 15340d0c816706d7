"""Eq. (2) masks: the world's exact object masks, CLIPSeg (a tiny random one saved and loaded back
through from_pretrained, the path of CIDAS/clipseg-rd64-refined), and the noised masked image."""

import numpy as np
import pytest

from compodiff.masking import noise_masked_region
from datagen.masks import ClipSegMasker, world_object_mask


@pytest.fixture(scope="module")
def clipseg_dir(tmp_path_factory):
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

    from datagen.sd_random import clip_tokenizer

    d = tmp_path_factory.mktemp("clipseg")
    small = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    cfg = CLIPSegConfig(text_config={**small, "vocab_size": 49408},
                        vision_config={**small, "image_size": 64, "patch_size": 16}, projection_dim=32, reduce_dim=16,
                        extract_layers=[1], decoder_num_attention_heads=2, decoder_intermediate_size=32)
    CLIPSegForImageSegmentation(cfg).save_pretrained(d / "m")
    CLIPSegProcessor(image_processor=ViTImageProcessor(size={"height": 64, "width": 64}),
                     tokenizer=clip_tokenizer(d / "tok")).save_pretrained(d / "m")
    return d / "m"


def test_clipseg_masks_come_back_at_each_image_size(clipseg_dir):
    masker = ClipSegMasker(clipseg_dir)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(3)]
    masks = masker(images, ["star", "circle", "heart"])
    assert masks.shape == (3, 48, 48) and masks.dtype == bool
    again = masker(images, ["star", "circle", "heart"])
    np.testing.assert_array_equal(masks, again)
    one = masker(images[:1], ["star"])  # a batch of one comes back squeezed by the model
    np.testing.assert_array_equal(one[0], masks[0])


def test_a_clipseg_directory_that_does_not_load_names_it(tmp_path):
    with pytest.raises(ValueError, match="nothing-here"):
        ClipSegMasker(tmp_path / "nothing-here")


def test_world_masks_and_noise_only_inside_the_mask():
    seg = np.zeros((8, 8), np.uint8)
    seg[2:4, 2:4] = 1
    seg[5:7, 5:7] = 2
    m = world_object_mask(seg, np.random.default_rng(0))
    assert m.sum() == 4 and set(np.unique(seg[m])) <= {1, 2}
    assert not world_object_mask(np.zeros((8, 8), np.uint8), np.random.default_rng(0)).any()
    img = np.full((8, 8, 3), 10, np.uint8)
    out = noise_masked_region(img, m, np.random.default_rng(1), 64.0)
    assert (out[~m] == 10).all() and (out[m] != 10).any()
    with pytest.raises(ValueError, match="does not match"):
        noise_masked_region(img, np.zeros((4, 4), bool), np.random.default_rng(1), 64.0)
