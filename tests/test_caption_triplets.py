"""Caption triplets: templates, FAISS window, keyword replacement, edit grammar, LLM plumbing."""

import json

import numpy as np
import pytest
import torch

from datagen import llm_triplets as L
from datagen.instructions import fill_template, is_training_phrasing, keyword_templates
from datagen.keyword_triplets import keyword_triplets, object_terms, similarity_window
from datagen.world import edits as E
from datagen.world.captions import caption, parse_caption
from datagen.world.nlp import build_world_nlp
from datagen.world.scene import sample_scene


def test_the_48_templates_of_table_2():
    t = keyword_templates()
    assert len(t) == 48
    assert t[0] == "replace ${source} with ${target}" and t[-1] == "${target} is the updated version"
    assert t.count("replace ${source} with ${target}") == 2  # printed twice in the paper
    assert fill_template(t[14], "star", "heart") == "turn star into heart"


def test_similarity_window_equals_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16)).astype(np.float32)
    got = similarity_window(x, 0.2, 0.6)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    for i in range(len(x)):
        want = {j for j in range(len(x)) if j != i and 0.2 <= sim[i, j] <= 0.6}
        assert {j for j, _ in got[i]} == want
        assert all(abs(s - sim[i, j]) < 1e-5 for j, s in got[i])


def test_object_terms_are_frequent_nouns():
    nlp = build_world_nlp()
    docs = nlp.pipe(["a red star on a navy background", "a blue star on a teal background", "a red heart"])
    terms = object_terms(docs, min_count=2)
    assert set(terms) == {"star", "background"} and terms["star"] == 2


NEIGHBOURS = {"star": [("heart", 0.62)], "heart": [("star", 0.62)], "background": []}


def test_keyword_triplets_both_directions_swap_exactly():
    rows, stats = keyword_triplets(["c1"], ["a red star on a navy plain background"], build_world_nlp(),
                                   NEIGHBOURS, seed=3)
    assert stats.triplets == 2 and rows["direction"] == ["forward", "reverse"]
    f, r = 0, 1
    assert rows["target"][f] == "a red heart on a navy plain background"
    assert rows["reference"][r] == rows["target"][f] and rows["target"][r] == rows["reference"][f]
    assert (rows["source_keyword"][r], rows["target_keyword"][r]) == ("heart", "star")
    template = keyword_templates()[rows["template_id"][f]]
    assert rows["instruction"][f] == fill_template(template, "star", "heart")
    assert rows["instruction"][r] == fill_template(template, "heart", "star")
    assert rows["source_id"] == ["c1", "c1"] and rows["similarity"][0] == pytest.approx(0.62)
    assert rows["method"] == ["keyword", "keyword"]


def test_keyword_triplets_count_every_skip_reason():
    captions = ["", "une étoile rouge", "red blue", "a red circle on a navy background",
                "a red star on a navy background", "a red star on a navy background"]
    rows, stats = keyword_triplets([str(i) for i in range(6)], captions, build_world_nlp(),
                                   {**NEIGHBOURS, "star": [("picture", 0.6)]}, seed=0,
                                   validate=lambda c: "picture" not in c)
    assert stats.captions == 6 and stats.triplets == 0
    assert dict(stats.skipped) == {"empty caption": 1, "non-English caption": 1, "no noun": 1,
                                   "no keyword in the similarity window": 1, "target caption not renderable": 2}


def test_world_edit_grammar_is_self_consistent_and_catches_wrong_edits():
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(400):
        text = caption(sample_scene(rng), rng)
        spec = parse_caption(text)
        e = E.sample_edit(spec, rng)
        assert e is not None
        kinds.add(e.kind)
        inst = E.instruction(spec, e, rng)
        out = E.caption_of(E.apply_edit(spec, e), E.phrasing_of(text))
        assert E.consistent(text, inst, out) == (True, "ok")
        assert E.edit_kind(text, inst) == e.kind
        assert is_training_phrasing(inst)
        assert not E.consistent(text, inst, text)[0]  # the unedited caption is not the edit's result
    assert kinds == set(E.EDIT_KINDS)
    ok, why = E.consistent("a red star on a navy background", "make the red star blue",
                           "a green star on a navy background")
    assert not ok and "not the instruction applied" in why
    assert not E.consistent("a red star on a navy background", "sing a song", "a red star on a navy background")[0]
    assert E.edit_kind("a red star on a navy background", "sing a song") == "unparsed"


def test_combined_seed_edits_round_trip_through_the_grammar():
    rng = np.random.default_rng(5)
    combined = 0
    for _ in range(300):
        text = caption(sample_scene(rng), rng)
        spec = parse_caption(text)
        steps = E.sample_edits(spec, rng, p_combined=0.5)
        inst = E.instructions(spec, steps, rng)
        out = E.caption_of(E.apply_edits(spec, steps), E.phrasing_of(text))
        assert E.consistent(text, inst, out) == (True, "ok"), (text, inst, out)
        assert E.edit_kind(text, inst) == ("combined" if len(steps) == 2 else steps[0].kind)
        if len(steps) == 2:
            combined += 1
            assert steps[0].kind != steps[1].kind and E.COMBINE in inst
            assert not E.consistent(text, inst, E.caption_of(E.apply_edit(spec, steps[0]), E.phrasing_of(text)))[0]
    assert 100 < combined < 200
    # with no combined share, the seed stream is the single-edit sampler's, draw for draw
    spec = parse_caption("a red star on a navy background")
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    assert [E.sample_edits(spec, a, 0.0) for _ in range(20)] == [[E.sample_edit(spec, b)] for _ in range(20)]


def test_llm_statistics_count_edit_kinds_and_consistency_per_kind(monkeypatch):
    """A set that is consistent only on its easy kind must show it per kind, not only overall."""
    rng = np.random.default_rng(3)
    captions, completions, expected = [], [], {}
    while len(captions) < 12:
        text = caption(sample_scene(rng), rng)
        spec = parse_caption(text)
        e = E.sample_edit(spec, rng)
        if e is None or text in captions:
            continue
        out = E.caption_of(E.apply_edit(spec, e), E.phrasing_of(text))
        easy = e.kind in ("colour", "background", "texture")
        if not easy:  # every other kind written wrongly: another edit applied instead
            e2 = E.sample_edit(spec, rng)
            if e2 is None or e2 == e:
                continue
            wrong = E.caption_of(E.apply_edit(spec, e2), E.phrasing_of(text))
            if E.consistent(text, E.instruction(spec, e, rng), wrong)[0] or wrong == text:
                continue
            out = wrong
        captions.append(text)
        completions.append(L.completion_text(E.instruction(spec, e, rng), out))
        good, n = expected.get(e.kind, (0, 0))
        expected[e.kind] = (good + easy, n + 1)
    monkeypatch.setattr(L.triplets, "generate", lambda *a, **k: completions)
    monkeypatch.setattr(L.triplets, "output_logprob", lambda m, t, c, *a: (np.zeros(len(c)), np.ones(len(c), int)))
    rows, stats = L.llm_triplets(None, None, [str(i) for i in range(12)], captions, {"batch_size": 4}, 0,
                                 consistent=E.consistent, edit_kind=E.edit_kind)
    assert stats["kept"] == 12 and stats["edit_kinds"] == {k: n for k, (_, n) in expected.items()}
    assert stats["consistent_fraction_by_kind"] == {k: g / n for k, (g, n) in expected.items()}
    assert 0 < sum(g for g, _ in expected.values()) < 12 and len(expected) > 2
    assert stats["top_edit_kind_share"] == max(n for _, n in expected.values()) / 12


def test_ip2p_jsonl_accepts_input_or_caption_and_counts_bad_lines(tmp_path):
    path = tmp_path / "gpt-generated-prompts.jsonl"
    lines = [{"input": "a cat", "edit": "make it a dog", "output": "a dog", "url": "u"},
             {"caption": "a house", "edit": "add snow", "output": "a snowy house"},
             {"input": "a tree", "output": "a red tree"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    rows, stats = L.read_ip2p_jsonl(path)
    assert [r["caption"] for r in rows] == ["a cat", "a house"]
    assert stats.lines == 4 and dict(stats.skipped) == {"missing input/caption, edit or output": 1, "not JSON": 1}


@pytest.mark.parametrize("completion,expected", [
    ("make it blue\n%%\na blue star\nEND", ("make it blue", "a blue star")),
    ("make it blue\n%%\na blue star", "no stop sequence"),
    ("make it blue\na blue star\nEND", "not exactly one instruction and one output"),
    ("x\n%%\ny\n%%\nz\nEND", "not exactly one instruction and one output"),
    ("nothing\n%%\nA red star.\nEND", "output equals input"),
])
def test_completion_parsing_follows_ip2p(completion, expected):
    assert L.parse_completion("a red star", completion) == expected


def test_frequency_penalty_subtracts_counts_of_generated_tokens():
    scores = torch.zeros(1, 5)
    ids = torch.tensor([[4, 4, 1, 1, 2]])  # prompt [4, 4], generated [1, 1, 2]
    out = L.FrequencyPenalty(0.5, prompt_length=2)(ids, scores)
    assert out.tolist() == [[0.0, -1.0, -0.5, 0.0, 0.0]]


def test_output_temperature_applies_after_the_output_separator_only():
    """The instruction samples at one temperature, the edited caption (after "%%") at another."""
    marker = [7, 9]
    proc = L.OutputTemperature(0.5, 0.01, prompt_length=2, marker=marker)
    ids = torch.tensor([[1, 2, 3, 7, 9, 4],    # marker generated: output part
                        [1, 2, 7, 3, 9, 4],    # its tokens apart: still the instruction
                        [7, 9, 3, 3, 3, 3]])   # marker in the prompt only: still the instruction
    out = proc(ids, torch.ones(3, 4))
    assert out[:, 0].tolist() == pytest.approx([100.0, 2.0, 2.0])
    assert L.OutputTemperature(0.5, 0.01, 6, marker)(ids[:, :6], torch.ones(3, 4))[:, 0].tolist() == [2.0] * 3
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        L.OutputTemperature(0.7, 0.0, 2, marker)


def test_world_lm_round_trips_through_from_pretrained(tmp_path):
    texts = ["a red star on a navy background", "a blue circle on a teal background"] * 20
    tok = L.train_tokenizer(texts + [L.SEP_EDIT, L.SEP_OUT, L.STOP], 280, tmp_path / "tokenizer")
    torch.manual_seed(0)
    model = L.build_world_lm(tok, 32, 1, 2, 64, 96)
    L.train_causal_lm(model, tok, texts, None, 2, 8, 1e-3, 0)
    model.save_pretrained(tmp_path / "base")
    lora = L.add_lora(model, 4, 8, 0.0, ["q_proj", "v_proj"])
    prompts = [L.prompt_text(t) for t in texts]
    L.train_causal_lm(lora, tok, prompts, [L.completion_text("make it blue", "x")] * len(texts), 2, 8, 1e-2, 0)
    lora.save_pretrained(tmp_path / "adapter")
    back, back_tok = L.load_lm(tmp_path / "base", tmp_path / "adapter", tmp_path / "tokenizer")
    assert back_tok.padding_side == "left"
    ids = back_tok(["a red star"], return_tensors="pt")["input_ids"]
    torch.testing.assert_close(back(input_ids=ids).logits, lora.eval()(input_ids=ids).logits)
    outs = L.generate(back, back_tok, ["a red star", "a blue circle"], 0.7, 1.0, 0.1, 12, 2, seed=1)
    assert outs == L.generate(back, back_tok, ["a red star", "a blue circle"], 0.7, 1.0, 0.1, 12, 2, seed=1)
    two = L.generate(back, back_tok, ["a red star", "a blue circle"], 0.7, 1.0, 0.1, 12, 2, seed=1,
                     output_temperature=0.05)
    assert two == L.generate(back, back_tok, ["a red star", "a blue circle"], 0.7, 1.0, 0.1, 12, 2, seed=1,
                             output_temperature=0.05)
    with pytest.raises(ValueError, match="temperatures must be > 0"):  # 0 is an error, not "the same"
        L.generate(back, back_tok, ["a red star"], 0.7, 1.0, 0.1, 12, 2, seed=1, output_temperature=0.0)


def test_lora_trains_the_embeddings_of_tokens_the_base_never_saw(tmp_path):
    """The world's OPT is pre-trained on captions only: the IP2P format's tokens keep their random
    embedding (tied to the LM head), which LoRA alone leaves frozen. Those rows, and only those, train."""
    texts = ["a red star on a navy background", "a blue circle on a teal background"] * 4
    tok = L.train_tokenizer(texts + ["make the red star blue", L.SEP_EDIT, L.SEP_OUT, L.STOP], 100,
                            tmp_path / "tokenizer", "word")
    new = L.tokens_absent_from(tok, texts)
    assert set(tok.convert_ids_to_tokens(new)) == {"make", "##", "%%", "END", "\n", " the"}
    torch.manual_seed(0)
    base = L.build_world_lm(tok, 32, 1, 2, 64, 96)
    before = base.get_input_embeddings().weight.detach().clone()
    base.save_pretrained(tmp_path / "base")
    lora = L.add_lora(base, 4, 8, 0.0, ["q_proj", "v_proj"], new)
    L.train_causal_lm(lora, tok, [L.prompt_text(texts[0])] * 8,
                      [L.completion_text("make the red star blue", "a blue star on a navy background")] * 8,
                      20, 4, 1e-2, 0)
    lora.save_pretrained(tmp_path / "adapter")
    back, _ = L.load_lm(tmp_path / "base", tmp_path / "adapter", tmp_path / "tokenizer")
    ids = torch.arange(len(tok))[None]
    after = back.get_input_embeddings()(ids)[0].detach()
    changed = sorted(torch.nonzero((after - before).abs().amax(1) > 0).flatten().tolist())
    assert changed == new
    # the LM head is the embedding (tied): it scores with the trained rows, after the reload too
    h = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.get_output_embeddings()(h), h @ after.T)


def test_seed_completions_leave_out_the_instruction_at_the_configured_share():
    seeds = [(f"a red star {i}", "make the star blue", f"a blue star {i}") for i in range(2000)]
    dropped = L.seed_completions(seeds, 0.2, seed=3)
    empty = [c for c in dropped if c.startswith(L.SEP_OUT)]
    assert 330 < len(empty) < 470  # 400 expected
    assert all(c == L.completion_text("", s[2]) for c, s in zip(dropped, seeds) if c.startswith(L.SEP_OUT))
    assert dropped == L.seed_completions(seeds, 0.2, seed=3)
    assert L.seed_completions(seeds, 0.0, seed=3) == [L.completion_text(s[1], s[2]) for s in seeds]
    with pytest.raises(ValueError, match="instruction_dropout"):
        L.seed_completions(seeds, 1.0, seed=3)


def test_after_marker_stops_a_row_once_its_generated_part_ends_with_the_separator():
    stop = L.AfterMarker([7, 9], prompt_length=2)
    ids = torch.tensor([[7, 9, 3, 7, 9],   # generated [3, 7, 9]: stop
                        [7, 9, 7, 9, 3],   # marker generated, then more (cannot happen): not at the end
                        [7, 9, 3, 3, 3]])  # marker in the prompt only
    assert stop(ids, None).tolist() == [True, False, False]
    assert stop(ids[:, :3], None).tolist() == [False] * 3


def _guided_world_lm(tmp_path):
    """A one-layer LM taught two edits of each caption, a third of them with the instruction left out."""
    colours, shapes = ["red", "blue", "green"], ["star", "circle"]
    seeds = [(f"a {c} {s} on a navy background", f"make the {s} {n}", f"a {n} {s} on a navy background")
             for c in colours for s in shapes for n in colours if n != c]
    tok = L.train_tokenizer([" ".join(r) for r in seeds] + [L.SEP_EDIT, L.SEP_OUT, L.STOP], 100,
                            tmp_path / "tokenizer", "word")
    torch.manual_seed(0)
    lm = L.build_world_lm(tok, 32, 1, 2, 64, 96)
    tok.padding_side = "right"
    L.train_causal_lm(lm, tok, [L.prompt_text(s[0]) for s in seeds] * 8,
                      L.seed_completions(seeds * 8, 0.34, seed=0), 300, 16, 1e-2, 0)
    tok.padding_side = "left"
    return lm, tok, seeds


def test_guidance_writes_the_edited_caption_by_the_cfg_rule_and_never_an_empty_instruction(tmp_path):
    """g != 1: the instruction is sampled up to "%%", then each caption token is the argmax of
    log p(.|caption) + g (log p(.|caption, instruction) - log p(.|caption)) (near-greedy output
    temperature), the unconditional branch being the empty instruction; recomputed here by hand."""
    lm, tok, seeds = _guided_world_lm(tmp_path)
    captions = sorted({s[0] for s in seeds})
    g = 3.0
    outs = L.generate(lm, tok, captions, 1.0, 1.0, 0.0, 30, 4, seed=0, output_temperature=1e-4,
                      guidance_scale=g)
    assert outs == L.generate(lm, tok, captions, 1.0, 1.0, 0.0, 30, 4, seed=0, output_temperature=1e-4,
                              guidance_scale=g)
    checked = 0
    for cap, completion in zip(captions, outs):
        instruction = completion.split(L.SEP_OUT)[0]
        assert instruction.strip(), f"empty instruction for {cap!r}: {completion!r}"
        words = tok(instruction, add_special_tokens=False)["input_ids"]
        if L.SEP_OUT not in completion or tok.unk_token_id in words or tok.decode(words) != instruction:
            continue  # a sampled instruction whose text does not give back its tokens (" bluea")
        bos = [tok.bos_token_id]
        cond = bos + tok(L.prompt_text(cap) + instruction + L.SEP_OUT.rstrip("\n"),
                         add_special_tokens=False)["input_ids"]
        uncond = bos + tok(L.prompt_text(cap) + L.SEP_OUT.rstrip("\n"), add_special_tokens=False)["input_ids"]
        written = []
        with torch.no_grad():
            for _ in range(30):
                lc = lm(input_ids=torch.tensor([cond + written])).logits[0, -1].log_softmax(-1)
                lu = lm(input_ids=torch.tensor([uncond + written])).logits[0, -1].log_softmax(-1)
                guided = lu + g * (lc - lu)
                guided[[tok.pad_token_id, tok.unk_token_id]] = -torch.inf  # generate never writes those
                written.append(int(guided.argmax()))
                if written[-1] == tok.eos_token_id:
                    break
        assert completion == instruction + L.SEP_OUT.rstrip("\n") + tok.decode(written, skip_special_tokens=True)
        checked += 1
    assert checked >= len(captions) // 2
    with pytest.raises(ValueError, match="guidance_scale must be > 0"):
        L.generate(lm, tok, captions, 1.0, 1.0, 0.0, 30, 4, seed=0, guidance_scale=0.0)
    # the model learnt the empty instruction; without the suppression some completions would open with it
    first = lm(input_ids=torch.tensor([[tok.bos_token_id] + tok(L.prompt_text(captions[0]),
                                                                  add_special_tokens=False)["input_ids"]]))
    sep = tok(L.SEP_OUT, add_special_tokens=False)["input_ids"][0]
    assert first.logits[0, -1].softmax(-1)[sep] > 0.05


def test_output_logprob_is_the_edited_captions_log_likelihood_given_caption_and_instruction(tmp_path):
    """Recomputed row by row without padding; the taught edit scores above a wrong one."""
    lm, tok, seeds = _guided_world_lm(tmp_path)
    wrong = [(c, i, o.replace("a ", "a huge ", 1) if k % 2 else o.split(" on ")[0]) for k, (c, i, o) in
             enumerate(seeds[:6])]
    rows = seeds[:6] + wrong  # outputs of three lengths, so the batches pad
    sums, counts = L.output_logprob(lm, tok, *map(list, zip(*rows)), batch_size=4)
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    for (c, i, o), got, n in zip(rows, sums, counts):
        assert enc(L.completion_text(i, o)) == enc(i + L.SEP_OUT) + enc(o) + enc(L.STOP)
        context = [tok.bos_token_id] + enc(L.prompt_text(c)) + enc(i + L.SEP_OUT)
        scored = enc(o + L.STOP)  # the edited caption and where it ends
        with torch.no_grad():
            logp = lm(input_ids=torch.tensor([context + scored])).logits[0].log_softmax(-1)
        want = sum(logp[len(context) + k - 1, t].item() for k, t in enumerate(scored))
        assert n == len(scored) and got == pytest.approx(want, abs=1e-4)
    assert all(sums[:6] > sums[6:] + 1.0)


def test_min_output_logprob_drops_the_unlikely_triplets_with_a_counted_reason(tmp_path, monkeypatch):
    lm, tok, seeds = _guided_world_lm(tmp_path)
    good = seeds[:5]
    bad = [(c, i, o.replace("navy", "teal")) for c, i, o in seeds[5:10]]
    captions = [r[0] for r in good + bad]
    monkeypatch.setattr(L.triplets, "generate", lambda *a, **k: [L.completion_text(i, o) for _, i, o in good + bad])
    truth = set(good)
    check = lambda c, i, o: ((c, i, o) in truth, "")  # noqa: E731
    ids = [str(k) for k in range(10)]
    rows, stats = L.llm_triplets(lm, tok, ids, captions, {"batch_size": 3}, 7, consistent=check)
    assert stats["kept"] == 10 and stats["consistent_fraction"] == 0.5 and stats["min_output_logprob"] is None
    sums, counts = L.output_logprob(lm, tok, *map(list, zip(*(good + bad))), batch_size=10)
    assert rows["output_logprob"] == pytest.approx(sums.tolist(), abs=1e-5)
    assert rows["output_tokens"] == counts.tolist()
    threshold = float((sums[:5].min() + sums[5:].max()) / 2)
    assert sums[:5].min() > sums[5:].max()  # the taught edits are the likely ones
    rows, stats = L.llm_triplets(lm, tok, ids, captions, {"batch_size": 3}, 7, consistent=check,
                                 min_output_logprob=threshold)
    assert rows["id"] == [f"{k}:llm" for k in range(5)]
    assert stats["rejected"] == {"output log-likelihood below min_output_logprob": 5}
    assert stats["consistent_fraction"] == 1.0 and stats["consistent_fraction_of_dropped"] == 0.0
    assert stats["parse_and_consistent_fraction"] == 0.5


def test_a_nan_score_fails_the_likelihood_filter(monkeypatch):
    """A broken LM (NaN logits) must not slip its triplets past the threshold: NaN >= x is false."""
    caps = ["a red star on a navy background", "a blue star on a navy background"]
    monkeypatch.setattr(L.triplets, "generate", lambda *a, **k: [L.completion_text("make the star green", "a green star"
                                                                           " on a navy background")] * 2)
    monkeypatch.setattr(L.triplets, "output_logprob", lambda m, t, c, *a: (np.array([np.nan, -0.1]), np.array([7, 7])))
    rows, stats = L.llm_triplets(None, None, ["0", "1"], caps, {"batch_size": 2}, 0, min_output_logprob=-1.0)
    assert rows["id"] == ["1:llm"] and stats["rejected"] == {"output log-likelihood below min_output_logprob": 1}
