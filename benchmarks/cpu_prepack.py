"""fp32 CPU inference with the linear layers' weights pre-reordered by oneDNN.

A sampling step at small batch is a few rows (3 guidance branches x 2 tokens per query) against
every weight of the network, so it streams the weights from memory. MKL's default GEMM is efficient
for 1 to 3 rows and slows down at 4 to 8 (it re-packs the weight on each call); oneDNN's
pre-reordered weight streams at full speed (benchmarks/bench_sampling.py). This is what PyTorch's
own graph compiler does with frozen CPU weights, without the compilation.

It calls oneDNN through private torch operators (``torch.ops.mkldnn._reorder_linear_weight``,
``_linear_pointwise``), which may change in any torch release, so it lives beside the benchmark that
measures it and not in the library: public paths measured in its place (``torch.utils.mkldnn``,
``torch.jit.optimize_for_inference``, ``torch.compile`` with freezing) kept well short of it
(bench_linear_paths.py). Serving uses int8 instead.

``prepacked_copy(module)`` returns a copy with its linear layers swapped; ``prepack_linears(module)``
swaps each ``nn.Linear`` for a ``PrepackedLinear`` that holds the same parameters (state-dict keys and
weights unchanged) and a reordered copy, refreshed whenever the weight changes in place
(``load_state_dict``, an optimizer step). Training, autograd, other devices and other dtypes take the
plain ``F.linear`` path.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PrepackedLinear(nn.Module):
    # rows where the reordered weight wins (measured on this project's CPU, bench_sampling): MKL's own
    # kernel is faster for 1-3 rows and for large batches, where the weight is read once for many rows
    ROWS = (4, 64)

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter objects: keys, sharing and optimizers unaffected
        self.bias = linear.bias
        self._packed: torch.Tensor | None = None
        self._packed_from: tuple | None = None

    def _reordered(self) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version)
        if self._packed is None or self._packed_from != key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None)
            self._packed_from = key
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(1, self.in_features)
        plain = (self.training or torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
                 or x.device.type != "cpu" or x.dtype != torch.float32 or self.weight.dtype != torch.float32
                 or not self.ROWS[0] <= rows <= self.ROWS[1])
        if plain:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self._reordered(), self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def prepacked_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with reordered linear layers; the caller's module is unchanged."""
    module = copy.deepcopy(module)
    prepack_linears(module)
    return module


def prepack_linears(module: nn.Module) -> int:
    """Swap every ``nn.Linear`` inside ``module`` for a ``PrepackedLinear``; returns how many.
    A no-op (0) where oneDNN is not available."""
    if not available():
        return 0
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, PrepackedLinear(child).train(child.training))
                swapped += 1
    return swapped
