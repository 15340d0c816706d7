"""The precision a trained denoiser serves in, through torch's supported paths.

A sampling step at small batch streams every weight of the network for a few rows, so it is bound
by memory: weights in fewer bytes make it faster.
  fp32  the trained weights as they are;
  bf16  every weight and activation in bfloat16: fast only where the CPU has bf16 units
        (avx512_bf16, AMX) or on a GPU; elsewhere torch emulates it;
  int8  dynamic quantization of the transformer blocks' linear layers
        (``torch.ao.quantization.quantize_dynamic``): int8 weights with one scale per output channel,
        activations quantized per batch, on the CPU's fbgemm kernels. The maps into and out of the
        embedding space (text, time and mask projections, the output projection) stay fp32: they
        run once per query or set the output directly, and keeping them lifts the composed
        embeddings' cosine to fp32 (docs/experiments/serving_precision.md). torchao's int8 configs
        are the successor, but in eager mode on a CPU they run slower than fp32, so the fbgemm path stays.
The caller's network is never changed: each precision but fp32 works on a copy.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "int8")
QUANTIZED = "transformer.layers."  # int8: the transformer blocks; every other layer stays fp32


def in_precision(module: nn.Module, precision: str) -> nn.Module:
    """``module`` itself for fp32, else an eval-mode copy in ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {list(PRECISIONS)}")
    if precision == "fp32":
        return module
    served = copy.deepcopy(module).eval()
    if precision == "bf16":
        return served.to(torch.bfloat16)
    if next(module.parameters()).device.type != "cpu":
        raise ValueError("int8 dynamic quantization runs on the CPU; serve a GPU in bf16")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch marks torch.ao deprecated in favour of torchao (see above)
        warnings.simplefilter("ignore")
        blocks = {name: per_channel_dynamic_qconfig for name, m in served.named_modules()
                  if type(m) is nn.Linear and name.startswith(QUANTIZED)}
        return quantize_dynamic(served, blocks, dtype=torch.qint8)
