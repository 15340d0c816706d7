"""benchmarks/cpu_prepack.py, oneDNN-reordered linear weights for fp32 CPU inference: same outputs, same
keys, fresh after changes, the caller's network untouched."""

import importlib.util
from pathlib import Path

import pytest
import torch

import compodiff
from compodiff import CompoDiffPipeline
from tests.query_fixtures import random_queries

_spec = importlib.util.spec_from_file_location(
    "cpu_prepack", Path(__file__).resolve().parents[1] / "benchmarks" / "cpu_prepack.py")
cpu_prepack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpu_prepack)
PrepackedLinear, prepack_linears = cpu_prepack.PrepackedLinear, cpu_prepack.prepack_linears

pytestmark = pytest.mark.skipif(not cpu_prepack.available(), reason="this torch has no oneDNN")


def test_prepacked_sampling_equals_plain_and_keeps_the_state_dict():
    torch.manual_seed(0)
    net = compodiff.build_denoiser("tiny")
    keys = {k: v.clone() for k, v in net.state_dict().items()}
    plain = CompoDiffPipeline(net)
    ref, text, null = random_queries(net.config)
    want = plain.compose_tokens(ref, text, null, steps=4, seed=2)
    fast = CompoDiffPipeline(cpu_prepack.prepacked_copy(net))
    assert not any(isinstance(m, PrepackedLinear) for m in net.modules())  # the caller's network is unchanged
    swapped = [m for m in fast.denoiser.modules() if isinstance(m, PrepackedLinear)]
    assert len(swapped) == sum(1 for m in compodiff.build_denoiser("tiny").modules() if type(m) is torch.nn.Linear)
    # each reordered layer equals the plain one to float rounding; through 4 guided steps (w_T 7.5 amplifies
    # the three branches' differences) the summation order of oneDNN's kernel shows: 7.3e-5 on AMD EPYC
    torch.testing.assert_close(fast.compose_tokens(ref, text, null, steps=4, seed=2), want, rtol=1e-3, atol=2e-4)
    assert sum(m._packed is not None for m in swapped) >= 7 * net.config.depth  # the reordered path ran
    x = torch.randn(6, swapped[0].in_features)  # 6 rows: a batch-1 guided step, the packed path
    with torch.no_grad():
        torch.testing.assert_close(swapped[0](x), torch.nn.functional.linear(x, swapped[0].weight, swapped[0].bias),
                                   rtol=1e-5, atol=1e-6)
    assert swapped[0]._packed is not None
    assert fast.denoiser.state_dict().keys() == keys.keys()
    assert all(torch.equal(fast.denoiser.state_dict()[k], v) for k, v in keys.items())


def test_prepacked_weights_follow_in_place_changes_and_training_uses_autograd():
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(16, 8)).eval()
    prepack_linears(lin)
    x = torch.randn(4, 16)
    with torch.no_grad():
        before = lin(x)
        assert lin[0]._packed is not None
        lin[0].weight.mul_(3.0)  # e.g. load_state_dict or an optimizer step
        after = lin(x)
    torch.testing.assert_close(after - lin[0].bias, 3.0 * (before - lin[0].bias), rtol=1e-4, atol=1e-5)
    lin.train()
    y = lin(x).sum()
    y.backward()
    assert lin[0].weight.grad is not None and lin[0].weight.grad.shape == (8, 16)
