"""Serving precisions: int8 and bf16 copies compose close to fp32 and leave the caller's network alone."""

import pytest
import torch

import compodiff
from compodiff import CompoDiffPipeline
from compodiff.precision import in_precision
from tests.query_fixtures import random_queries


@pytest.mark.parametrize("precision, min_cos", [("int8", 0.99), ("bf16", 0.98)])
def test_a_serving_precision_composes_close_to_fp32_on_a_copy(precision, min_cos):
    torch.manual_seed(0)
    net = compodiff.build_denoiser("world")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ref, text, null = random_queries(net.config)
    want = CompoDiffPipeline(net).compose_tokens(ref, text, null, steps=5, seed=1, w_image=1.5, w_text=3.0)
    pipe = CompoDiffPipeline(net, precision=precision)
    got = pipe.compose_tokens(ref, text, null, steps=5, seed=1, w_image=1.5, w_text=3.0)
    assert got.dtype == torch.float32 and got.shape == want.shape
    cos = torch.nn.functional.cosine_similarity(got, want)
    assert cos.min() >= min_cos, cos
    assert not torch.equal(got, want)  # it did run in another precision
    if precision == "int8":  # the blocks are quantized, the maps in and out of the embedding space are not
        linear = {n for n, m in pipe.denoiser.named_modules() if type(m) is torch.nn.Linear}
        assert linear and not any(n.startswith("transformer.layers.") for n in linear)
        assert "transformer.project_out" in linear
    assert next(pipe.denoiser.parameters()).dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    assert any(type(m) is torch.nn.Linear for m in net.modules())
    assert next(net.parameters()).dtype == torch.float32
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def test_fp32_is_the_network_itself_and_an_unknown_precision_is_refused():
    net = compodiff.build_denoiser("tiny")
    assert in_precision(net, "fp32") is net
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        in_precision(net, "fp16")
