"""The procedural world: scenes, renderer, captions, parser, spaCy pipeline."""

import numpy as np
import pytest
import spacy

from datagen.world import lexicon as lx
from datagen.world.captions import CAPTION_PHRASINGS, CaptionParseError, caption, full_caption, parse_caption
from datagen.world.nlp import save_world_nlp
from datagen.world.render import render
from datagen.world.scene import Scene, WorldObject, sample_scene


def test_vocabulary_is_large_enough_for_non_trivial_retrieval():
    assert len(lx.SHAPES) >= 15 and len(lx.COLOURS) >= 10
    assert len(lx.SIZES) + len(lx.TEXTURES) >= 10 and len(lx.BACKGROUNDS) >= 8


def test_sampler_is_seeded_and_scenes_round_trip_through_json():
    a = [sample_scene(np.random.default_rng(5)) for _ in range(3)]
    b = [sample_scene(np.random.default_rng(5)) for _ in range(3)]
    assert a == b
    s = a[0]
    assert Scene.from_json(s.to_json()) == s and s.is_resolved


def test_render_is_deterministic_and_jittered():
    scene = sample_scene(np.random.default_rng(1))
    im1, seg1 = render(scene, 7)
    im2, seg2 = render(scene, 7)
    im3, _ = render(scene, 8)
    assert im1.shape == (64, 64, 3) and im1.dtype == np.uint8 and seg1.shape == (64, 64)
    assert np.array_equal(im1, im2) and np.array_equal(seg1, seg2)
    assert not np.array_equal(im1, im3)  # same description, another image
    assert render(scene, 7, size=32)[0].shape == (32, 32, 3)


def test_segmap_marks_each_visible_object_in_its_colour():
    scene = Scene((WorldObject("square", "red", "large", "left"), WorldObject("circle", "blue", "small", "right")),
                  "beige", "plain")
    image, seg = render(scene, 3)
    for i, obj in enumerate(scene.objects):
        pix = image[seg == i + 1].astype(float)
        assert len(pix) > 20
        target = np.array(lx.COLOURS[obj.colour])
        assert np.abs(pix.mean(0) - target).max() < 60
    background = image[seg == 0].astype(float).mean(0)
    assert np.abs(background - lx.BACKGROUNDS["beige"]).max() < 30


def test_editing_one_object_keeps_every_other_pixel():
    """The world's prompt-to-prompt: same seed, edited scene -> only the edited object changes."""
    scene = Scene((WorldObject("star", "yellow", "medium", "top left"),
                   WorldObject("heart", "green", "small", "bottom right")), "navy", "striped")
    edited = Scene((WorldObject("star", "pink", "medium", "top left"), scene.objects[1]), "navy", "striped")
    a, seg_a = render(scene, 11)
    b, seg_b = render(edited, 11)
    assert np.array_equal(seg_a, seg_b)
    star = seg_a == 1
    near = star.copy()  # the star and its anti-aliased rim (one pixel around it)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= np.roll(np.roll(star, dy, 0), dx, 1)
    changed = (a != b).any(-1)
    assert changed.any() and not (changed & ~near).any()
    removed = Scene((scene.objects[1],), "navy", "striped")
    c, _ = render(removed, 11)
    heart = seg_a == 2
    assert np.array_equal(a[heart], c[heart])  # the remaining object stays where it was


@pytest.mark.parametrize("phrasing", range(len(CAPTION_PHRASINGS)))
def test_captions_parse_back_to_their_scene(phrasing):
    rng = np.random.default_rng(phrasing)
    for _ in range(100):
        scene = sample_scene(rng)
        text = caption(scene, rng, phrasing=phrasing)
        parsed = parse_caption(text)
        assert [(o.shape, o.colour) for o in parsed.objects] == [(o.shape, o.colour) for o in scene.objects]
        assert (parsed.background, parsed.texture) == (scene.background, scene.texture)
        for p, o in zip(parsed.objects, scene.objects):
            assert p.size in (None, o.size) and p.position in (None, o.position)
    assert parse_caption(full_caption(scene)) == scene


def test_partial_caption_resolves_to_many_scenes():
    spec = parse_caption("a red star on a navy background")
    assert spec.objects[0].size is None and spec.texture is None
    scenes = {spec.resolve(np.random.default_rng(i)).to_json() for i in range(20)}
    assert len(scenes) > 5


@pytest.mark.parametrize("text,reason", [
    ("", "empty caption"),
    ("a red dragon on a navy background", "unknown word 'dragon'"),
    ("a star on a navy background", "has no colour"),
    ("a red blue star", "two colours"),
    ("a large red", "describe no shape"),
    ("a red star at the middle", "unknown position"),
    ("a red star at the left and a blue circle at the left", "share a position"),
    ("a red star 🌟", "outside the world's alphabet"),
    ("on a navy background", "no object"),
])
def test_unparseable_captions_fail_clearly(text, reason):
    with pytest.raises(CaptionParseError, match=reason) as err:
        parse_caption(text)
    assert repr(text) in str(err.value) or not text


def test_world_spacy_pipeline_loads_from_disk_and_tags_nouns(tmp_path):
    nlp = spacy.load(save_world_nlp(tmp_path / "nlp"))
    doc = nlp("A huge purple crescent at the top right, on a mint dotted background")
    pos = {t.text: t.pos_ for t in doc}
    assert pos["crescent"] == "NOUN" and pos["background"] == "NOUN"
    assert pos["purple"] == "ADJ" and pos["huge"] == "ADJ" and pos["A"] == "DET"
    assert pos["mint"] == "NOUN" and pos["dotted"] == "ADJ"  # background names are nouns, as in English
    assert [t.text for t in doc if t.pos_ == "NOUN" and t.text in lx.SHAPES] == ["crescent"]


@pytest.mark.parametrize("reference,target,kind", [
    ("a red star on a navy background", "a red heart on a navy background", "replace"),
    ("a red star on a navy background", "a blue star on a navy background", "colour"),
    ("a small red star on a navy background", "a huge red star on a navy background", "size"),
    ("a red star on a navy background", "a red star and a blue circle on a navy background", "add"),
    ("a red star and a blue circle on a navy background", "a blue circle on a navy background", "remove"),
    ("a red star on a navy background", "a red star on a teal background", "background"),
    ("a red star on a navy striped background", "a red star on a navy dotted background", "texture"),
    ("a red star on a navy background", "a blue star on a teal background", "combined"),
    ("a red star on a navy background", "a red star on a navy background", "none"),
    ("a red star and a blue circle on a navy background", "a red heart and a green circle on a navy background",
     "unparsed"),  # two objects changed: no single edit, no pair of them
    ("a red star at the top on a navy background", "a red star at the left on a navy background", "position"),
    ("a red star on a navy background", "make it glitter", "unparsed"),
])
def test_edit_kind_reads_the_change_from_the_two_scene_graphs(reference, target, kind):
    from datagen.world.truth import edit_kind

    assert edit_kind(reference, target) == kind


def test_paraphrases_are_seeded_keep_the_scene_words_and_respect_the_fit():
    from datagen.world.language import BACKGROUND_NOUNS, paraphrase_captions, vocabulary

    rng = np.random.default_rng(4)
    captions = [caption(sample_scene(rng), rng) for _ in range(300)]
    out = paraphrase_captions(captions, 0.5, seed=1)
    assert out == paraphrase_captions(captions, 0.5, seed=1) and out != paraphrase_captions(captions, 0.5, seed=2)
    changed = [(a, b) for a, b in zip(captions, out) if a != b]
    assert 100 < len(changed) < 200
    for a, b in changed:
        spec = parse_caption(a)
        assert spec.background in b and all(o.shape in b for o in spec.objects)
        assert any(noun in b for noun in BACKGROUND_NOUNS)
    assert len(vocabulary(out)) > 2 * len(vocabulary(captions))
    assert paraphrase_captions(captions, 1.0, seed=1, fits=lambda t: False) == captions
    assert paraphrase_captions(captions, 0.0, seed=1) == captions


def test_edit_clauses_are_true_of_the_picture_and_train_every_edit_word(monkeypatch):
    import re

    from datagen.instructions import TRAINING_EDIT_PHRASINGS
    from datagen.world import language
    from datagen.world.language import _absent, edit_clause, paraphrase_captions, vocabulary

    rng = np.random.default_rng(7)
    for _ in range(200):
        scene = sample_scene(rng)
        shown = {f"{o.colour} {o.shape}" for o in scene.objects}
        assert all(name not in _absent(scene, rng) for name in shown for _ in range(5))
    star = Scene((WorldObject("star", "red", "large"),), background="navy", texture="striped")
    monkeypatch.setattr(language, "_absent", lambda scene, rng: "ABSENT")
    said = set()
    for _ in range(300):  # what a clause says of the shown object is its own colour and size
        words = set(edit_clause(star, rng).split())
        assert words & (set(lx.COLOURS) | set(lx.SIZES)) <= {"red", "large"}
        said |= words
    assert {"red", "large", "star", "ABSENT"} <= said
    monkeypatch.undo()
    rng = np.random.default_rng(3)
    captions = [caption(sample_scene(rng), rng) for _ in range(3000)]
    out = paraphrase_captions(captions, 0.3, seed=1, clauses=1.0)
    words = {w for ts in TRAINING_EDIT_PHRASINGS.values() for t in ts for w in re.sub(r"\{\w+\}", " ", t).split()}
    assert words <= vocabulary(out), sorted(words - vocabulary(out))
    assert words - vocabulary(paraphrase_captions(captions, 0.3, seed=1, clauses=0.0))  # the clauses bring them
