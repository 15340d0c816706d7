"""Schedule, DDIM and guidance: oracle and invariant tests on tiny configs."""

import math

import pytest
import torch

import compodiff
from compodiff import CompoDiffPipeline, TextConditions
from compodiff.denoiser import Context
from compodiff.diffusion import CosineSchedule, cosine_betas
from compodiff.sampling import ddim_sample, guided_x0, official_time_pairs


def test_cosine_schedule_matches_its_closed_form():
    s = CosineSchedule(1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 1, 500, 998):
        expected = min(f(t + 1) / f(0), 1.0)
        assert s.alpha_bar[t].item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert cosine_betas(1000).max().item() == pytest.approx(0.999)
    assert s.alpha_bar_prev[0].item() == 1.0


def test_official_spacing():
    pairs = official_time_pairs(11)
    assert len(pairs) == 10 and pairs[0] == (909, 818) and pairs[-1] == (90, -1)
    assert official_time_pairs(2) == [(499, -1)]
    with pytest.raises(ValueError):
        official_time_pairs(1)


def mixture_oracle(schedule, points):
    """The exact E[x0 | x_t] for data uniform on a few points: the ideal x0-denoiser."""
    def x0_fn(x_t, t):
        ab = schedule.alpha_bar[t][:, None, None]
        d2 = ((x_t[:, None, :] - ab.sqrt() * points[None]) ** 2).sum(-1, keepdim=True)
        w = torch.softmax(-d2 / (2 * (1 - ab)), dim=1)
        return (w * points[None]).sum(1)
    return x0_fn


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_oracle_denoiser_recovers_x0(eta):
    torch.manual_seed(0)
    schedule = CosineSchedule(1000)
    points = torch.randn(3, 16) * 2
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(1))
    out = ddim_sample(mixture_oracle(schedule, points), x, official_time_pairs(11), schedule, eta=eta,
                      generator=torch.Generator().manual_seed(2))
    d = (out[:, None, :] - points[None]).norm(dim=-1)  # exact, unlike cdist's matmul form
    assert d.min(dim=1).values.max() < 1e-3  # every sample lands on a data point
    counts = d.argmin(dim=1).bincount(minlength=3)
    assert (counts > 40).all()  # and all modes are reached


def test_ddim_constant_oracle_returns_it_exactly():
    schedule = CosineSchedule(1000)
    target = torch.randn(4, 8)
    out = ddim_sample(lambda x, t: target, torch.randn(4, 8), official_time_pairs(6), schedule)
    assert torch.equal(out, target)


def pipeline(seed=0, **overrides):
    torch.manual_seed(seed)
    return CompoDiffPipeline(compodiff.build_denoiser("tiny", **overrides))


def conditions(b=2, seed=0, length=5):
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(b, 32, generator=g)
    text = TextConditions(torch.randn(b, length, 24, generator=g), None)
    null = TextConditions(torch.randn(b, length, 24, generator=g), None)
    return ref, text, null


def branch_context(net, ref, text, null, mask):
    return compodiff.Context.cat([net.context(text.tokens, ref, mask), net.context(null.tokens, ref, mask),
                                  net.context(null.tokens, torch.zeros_like(ref), mask)])


def test_guidance_at_scale_one_equals_the_conditional_forward():
    pipe = pipeline()
    net = pipe.denoiser
    ref, text, null = conditions()
    mask = torch.zeros(2, 8, 8)
    x, t = torch.randn(2, 32), torch.tensor([10, 60])
    cond = net(x, t, text.tokens, ref, mask)
    ctx = branch_context(net, ref, text, null, mask)
    torch.testing.assert_close(guided_x0(net, x, t, ctx, 1.0, 1.0), cond)
    # the full three-branch formula at (1, 1) is the same number, not just the shortcut
    c, n_txt, n_all = net.denoise(x.repeat(3, 1), t.repeat(3), ctx).chunk(3)
    torch.testing.assert_close(n_all + 1.0 * (n_txt - n_all) + 1.0 * (c - n_txt), cond)


def test_guidance_at_scale_zero_is_the_unconditional_branch():
    pipe = pipeline()
    net = pipe.denoiser
    ref, text, null = conditions()
    mask = torch.zeros(2, 8, 8)
    x, t = torch.randn(2, 32), torch.tensor([10, 60])
    ctx = branch_context(net, ref, text, null, mask)
    torch.testing.assert_close(guided_x0(net, x, t, ctx, 0.0, 0.0),
                               net(x, t, null.tokens, torch.zeros_like(ref), mask))


def test_eq4_combines_three_branches_with_identical_x_t_and_t():
    pipe = pipeline()
    net = pipe.denoiser
    seen = []
    original = net.denoise

    def spy(x_t, t, context, time_token=None):
        seen.append((x_t.clone(), t.clone(), context.batch))
        return original(x_t, t, context, time_token)

    net.denoise = spy
    ref, text, null = conditions()
    pipe.compose_tokens(ref, text, null, w_image=1.5, w_text=7.5, steps=3, seed=0)
    assert len(seen) == 3  # one batched forward per step
    for x_t, t, batch in seen:
        assert batch == 6
        a, b, c = x_t.chunk(3)
        assert torch.equal(a, b) and torch.equal(b, c)
        ta, tb, tc = t.chunk(3)
        assert torch.equal(ta, tb) and torch.equal(tb, tc)


def test_eq4_weights_against_separate_forwards():
    pipe = pipeline()
    net = pipe.denoiser
    ref, text, null = conditions()
    mask = (torch.rand(2, 8, 8) > 0.5).float()
    x, t = torch.randn(2, 32), torch.tensor([5, 70])
    cond = net(x, t, text.tokens, ref, mask)
    n_txt = net(x, t, null.tokens, ref, mask)
    n_all = net(x, t, null.tokens, torch.zeros_like(ref), mask)  # the mask stays in every branch
    expected = n_all + 1.5 * (n_txt - n_all) + 7.5 * (cond - n_txt)
    got = guided_x0(net, x, t, branch_context(net, ref, text, null, mask), 1.5, 7.5)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("text2_dim", [0, 12])
@pytest.mark.parametrize("same_null", [True, False])
@pytest.mark.parametrize("text_masks", [False, True])
def test_guidance_context_equals_three_separate_contexts(text2_dim, same_null, text_masks):
    """The null text's keys and values are computed once for both null branches (and once per batch
    when every row has the same null text): the result must be the three contexts, concatenated."""
    torch.manual_seed(0)
    net = compodiff.CompoDiffDenoiser(compodiff.preset("tiny", text2_dim=text2_dim)).eval()
    c, b = net.config, 3
    ref = torch.randn(b, c.embed_dim)
    mask = (torch.rand(b, c.mask_size, c.mask_size) > 0.5).float()
    mask[0] = 0
    text = [torch.randn(b, 7, c.text_dim), torch.rand(b, 7) > 0.3, None, None]
    null = [torch.randn(1 if same_null else b, 7, c.text_dim).expand(b, 7, c.text_dim), None, None, None]
    if text2_dim:
        text[2:] = [torch.randn(b, 5, text2_dim), torch.rand(b, 5) > 0.3]
        null[2] = torch.randn(1 if same_null else b, 5, text2_dim).expand(b, 5, text2_dim)
    if not text_masks:
        text[1] = text[3] = None
    with torch.no_grad():
        want = Context.cat([net.context(text[0], ref, mask, *text[1:]), net.context(null[0], ref, mask, *null[1:]),
                            net.context(null[0], torch.zeros_like(ref), mask, *null[1:])])
        got = net.guidance_context(tuple(text), tuple(null), ref, mask)
    for (k1, v1), (k2, v2) in zip(want.kv, got.kv, strict=True):
        torch.testing.assert_close(k2, k1)
        torch.testing.assert_close(v2, v1)
    assert (want.key_mask is None) == (got.key_mask is None)
    if want.key_mask is not None:
        assert torch.equal(got.key_mask, want.key_mask)


def test_seeded_sampling_is_deterministic_and_seed_sensitive():
    pipe = pipeline()
    ref, text, null = conditions()
    a = pipe.compose_tokens(ref, text, null, steps=4, seed=3)
    b = pipe.compose_tokens(ref, text, null, steps=4, seed=3)
    c = pipe.compose_tokens(ref, text, null, steps=4, seed=4)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_zero_mask_is_the_no_mask_behaviour():
    pipe = pipeline()
    ref, text, null = conditions()
    a = pipe.compose_tokens(ref, text, null, masks=None, steps=3, seed=0)
    b = pipe.compose_tokens(ref, text, null, masks=torch.zeros(2, 8, 8), steps=3, seed=0)
    c = pipe.compose_tokens(ref, text, null, masks=torch.zeros(2, 100, 70), steps=3, seed=0)
    assert torch.equal(a, b) and torch.equal(a, c)
    d = pipe.compose_tokens(ref, text, null, masks=torch.ones(2, 8, 8), steps=3, seed=0)
    assert not torch.allclose(a, d)


def test_samples_per_query_are_averaged_like_the_release():
    pipe = pipeline()
    ref, text, null = conditions(b=1)
    avg = pipe.compose_tokens(ref, text, null, steps=3, seed=5, num_samples=2)
    # the release repeats each query R times and draws noise for all rows at once
    two = lambda c: TextConditions(c.tokens.repeat(2, 1, 1), None)  # noqa: E731
    rows = pipe.compose_tokens(ref.repeat(2, 1), two(text), two(null), steps=3, seed=5, num_samples=1)
    torch.testing.assert_close(avg, rows.mean(0, keepdim=True))


def test_mix_reference():
    pipe = pipeline()
    ref, text, null = conditions()
    plain = pipe.compose_tokens(ref, text, null, steps=2, seed=0)
    mixed = pipe.compose_tokens(ref, text, null, steps=2, seed=0, mix_reference=0.1)
    torch.testing.assert_close(mixed, 0.9 * plain + 0.1 * ref)


def test_bad_queries_are_clear_errors():
    pipe = pipeline()
    ref, text, null = conditions()
    with pytest.raises(ValueError, match=r"expected \(B, 32\)"):
        pipe.compose_tokens(torch.randn(2, 31), text, null)
    with pytest.raises(ValueError, match="NaN"):
        pipe.compose_tokens(torch.full((2, 32), float("nan")), text, null)
    with pytest.raises(ValueError, match="masks must be"):
        pipe.compose_tokens(ref, text, null, masks=torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="no text encoder"):
        pipe.compose(ref, ["a", "b"])


def test_null_text_keys_are_reused_between_calls_until_the_weights_change():
    pipe = pipeline()
    ref, text, null = conditions()
    null = TextConditions(null.tokens[:1].expand_as(null.tokens), None)  # one null text for every query
    first = pipe.compose_tokens(ref, text, null, steps=3, seed=1)
    assert len(pipe._null_cache) == 1
    torch.testing.assert_close(pipe.compose_tokens(ref, text, null, steps=3, seed=1), first)
    assert len(pipe._null_cache) == 1
    with torch.no_grad():  # new weights: the cached keys must not be used
        pipe.denoiser.transformer.layers[0][1].to_kv.weight.mul_(2.0)
    fresh = compodiff.CompoDiffPipeline(pipe.denoiser)
    torch.testing.assert_close(pipe.compose_tokens(ref, text, null, steps=3, seed=1),
                               fresh.compose_tokens(ref, text, null, steps=3, seed=1))
