"""Large reductions to one value run their chunks in parallel (codegen/split_reductions.py):
the same value as the interpreter, the same bits at any thread count, small ones left alone."""
import math

import numpy as np
import pytest

import nnjit
from nnjit.codegen.split_reductions import MIN_TERMS

N = 3 * MIN_TERMS + 17           # chunks of equal size and a tail


def kernels(cf) -> list[str]:
    return [k.split()[0] for k in cf.kernels()]


def compile_llvm(fn, *args):
    return nnjit.jit(fn, backend="llvm").lower(*args)


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal(N).astype(np.float32)


def test_a_large_sum_gets_a_parallel_partials_kernel_and_the_exact_value(x):
    cf = compile_llvm(lambda v: nnjit.tanh(v * 0.5).sum() * 2.0, x)
    assert kernels(cf) == ["k0_fusion_part", "k0_fusion"]
    assert "parallel for" in cf.kernel_ir().split("kernel k0_fusion(")[0]
    want = 2.0 * math.fsum(np.tanh(x.astype(np.float64) * 0.5))
    assert abs(float(cf(x)) - want) <= 1e-6 * np.abs(x).sum()


@pytest.mark.parametrize("reduce, ref", [(nnjit.max, np.max), (nnjit.min, np.min)])
def test_max_and_min_split_exactly(x, reduce, ref):
    y = x.copy()
    y[N - 3] = 9.0                 # in the tail
    y[5] = -9.0                    # in the first chunk
    cf = compile_llvm(lambda v: reduce(v), y)
    assert len(kernels(cf)) == 2
    assert cf(y) == ref(y)


def test_integer_sums_and_index_checks_over_many_labels():
    labels = np.random.default_rng(1).integers(0, 10, N)
    cf = compile_llvm(lambda v: v.sum(), labels)
    assert len(kernels(cf)) == 2 and cf(labels) == labels.sum()
    table = np.arange(10, dtype=np.float32)
    bad = labels.copy()
    bad[N - 2] = 10                # the last chunk's neighbour: the tail
    f = nnjit.jit(lambda t, i: nnjit.take(t, i).sum(), backend="llvm")
    assert f(table, labels) == table[labels].sum()
    with pytest.raises(nnjit.IndexOutOfRange, match="10"):
        f(table, bad)


def test_the_value_does_not_depend_on_the_thread_count(x, monkeypatch):
    got = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("NNJIT_NUM_THREADS", threads)
        monkeypatch.setenv("NNJIT_CACHE", "0")
        got.append(compile_llvm(lambda v: (v * v).sum(), x)(x))
    assert got[0].tobytes() == got[1].tobytes() == got[2].tobytes()


def test_small_reductions_argmax_and_row_reductions_are_left_alone(x):
    small = x[:MIN_TERMS - 1]
    assert len(kernels(compile_llvm(lambda v: v.sum(), small))) == 1
    assert len(kernels(compile_llvm(lambda v: nnjit.argmax(v), x))) == 1
    rows = x[:N - 17].reshape(3, -1)
    assert len(kernels(compile_llvm(lambda v: v.sum(axis=1), rows))) == 1


def test_mean_and_softmax_over_one_long_vector_match_the_interpreter(x):
    for fn in (lambda v: nnjit.mean(v), lambda v: nnjit.softmax(v)):
        want = nnjit.jit(fn, backend="interp")(x)
        got = compile_llvm(fn, x)(x)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12)
