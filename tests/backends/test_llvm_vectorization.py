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


@pytest.mark.parametrize("n", [80, 83])
def test_an_in_place_update_in_a_gemm_epilogue_vectorizes(n):
    """A weight gradient fused with the SGD update written over the donated weight: the
    epilogue reads and writes the same array at the same index, which LLVM's overlap check
    always refused (scalar code); the columns are declared independent instead."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, n)).astype(np.float32)
    x = rng.standard_normal((16, 64)).astype(np.float32)
    dy = rng.standard_normal((16, n)).astype(np.float32)
    want = w - 0.01 * (x.T @ dy)
    step = nnjit.jit(lambda w, x, dy: w - 0.01 * (x.T @ dy), backend="llvm", donate_argnums=(0,))
    ir_text = step.lower(w, x, dy).llvm_ir(optimized=True)
    epilogues = re.findall(r"define [^\n]*epilogue\(.*?\n}", ir_text, re.S)
    assert epilogues and all(re.search(r"<(8|16) x float>", e) for e in epilogues)
    # No runtime overlap check (pointer comparisons) guards the vector loop.
    assert not any(re.search(r"icmp \w+ ptr", e) for e in epilogues)
    got = step(w.copy(), x, dy)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("width", [28, 10, 9])
def test_a_stride_two_pool_over_short_rows_reads_with_interleaved_loads(pool, width):
    """A 2x2 stride-2 pool whose output rows are shorter than a vector (LeNet's 14- and
    5-wide rows): LLVM vectorized such loops only with masks, and each strided load became a
    gather (4x slower), or unrolled the row and gathered down the columns."""
    x = np.random.default_rng(2).standard_normal((8, 6, width, width)).astype(np.float32)
    b = np.linspace(-0.5, 0.5, 6, dtype=np.float32).reshape(1, 6, 1, 1)
    op = nnjit.max_pool2d if pool == "max" else nnjit.avg_pool2d
    fn = nnjit.jit(lambda x: op(nnjit.relu(x + b), 2), backend="llvm")
    ir_text = fn.lower(x).llvm_ir(optimized=True)
    assert "llvm.masked.gather" not in ir_text
    assert re.search(r"<(8|16) x float>", ir_text)
    h = width // 2
    y = np.maximum(x + b, 0)[:, :, :2 * h, :2 * h].reshape(8, 6, h, 2, h, 2)
    want = y.max(axis=(3, 5)) if pool == "max" else y.mean(axis=(3, 5))
    np.testing.assert_allclose(fn(x), want, rtol=1e-6, atol=1e-6)
