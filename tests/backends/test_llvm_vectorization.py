"""The kernels the issues single out must compile to vector code on this CPU: pooling and its
gradients, row reductions, and the fused elementwise chain with transcendentals."""
from __future__ import annotations

import re

import numpy as np
import pytest

import nnjit


def vector_instructions(asm: str) -> int:
    """AVX instructions on ymm/zmm registers in the module's own code."""
    return len(re.findall(r"\tv\w+\s+[^\n]*%[yz]mm", asm))


CASES = {
    "max_pool2d": lambda x: nnjit.max_pool2d(x, 2),
    "avg_pool2d": lambda x: nnjit.avg_pool2d(x, 2),
    "max_pool2d_grad": lambda x: nnjit.grad(lambda x: (nnjit.max_pool2d(x, 2) ** 2).sum())(x),
    "avg_pool2d_grad": lambda x: nnjit.grad(lambda x: (nnjit.avg_pool2d(x, 2) ** 2).sum())(x),
    "softmax_rows": lambda x: nnjit.softmax(x.reshape(64 * 6, 784)),
    "bias_gradient": lambda x: x.sum(axis=(0, 2, 3)),
    "chain": lambda x: nnjit.tanh(x * 1.5 + 0.5) * nnjit.sigmoid(x) + nnjit.relu(x - 0.25),
}


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_uses_vector_instructions(name):
    x = np.random.default_rng(0).standard_normal((64, 6, 28, 28)).astype(np.float32)
    cf = nnjit.jit(CASES[name], backend="llvm", fuse=False).lower(x)
    asm = cf.asm()
    assert vector_instructions(asm) >= 8, f"{name}: no vector code in\n{asm[:2000]}"
    assert not re.search(r"call\s+\w*(expf|tanhf|logf)\b", asm)
