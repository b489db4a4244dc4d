"""Differential testing: random graphs (every op family, scans with captured consts, odd
shapes) compiled by the native backend, fused and unfused, must give the reference
interpreter's results on random inputs (or raise the IndexOutOfRange it raises); compiled again
with every input donated, they must give the same results, each with its own shape and dtype.
The fuzzer (tests/fuzz/) runs the same graphs with awkward values, out-of-range indices and
gradient checks."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis import HealthCheck

from nnjit.ir import DType, IndexOutOfRange, evaluate
from nnjit.passes.pipeline import default_pipeline
from nnjit.runtime.compiled import Options, compile_graph
from tests.fuzz.generate import random_graphs


def _inputs(g, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for t in g.input_types:
        if t.dtype.is_float:
            a = rng.standard_normal(t.shape) * 2
        elif t.dtype == DType.BOOL:
            a = rng.random(t.shape) < 0.5
        else:
            a = rng.integers(-5, 6, t.shape)
        out.append(np.asarray(a, t.dtype.np))
    return out


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    if want.dtype.kind != "f":
        return np.array_equal(got, want)
    with np.errstate(all="ignore"):
        # Vector math and reassociated reductions differ from numpy in the last bits; where
        # numpy overflows to inf or lands on nan the native code must too.
        return np.allclose(got, want, rtol=1e-4, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("fuse", [True, False])
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(g=random_graphs(max_ops=8, depth=1), seed=st.integers(0, 2**16))
def test_random_graphs_match_the_interpreter(fuse, g, seed):
    args = _inputs(g, seed)
    try:
        with np.errstate(all="ignore"):
            want = evaluate(g, args)
    except IndexOutOfRange as e:      # an index input out of range: llvm must say the same
        want = e
    for _, p in default_pipeline(fuse):
        g = p(g)
    exe = compile_graph(g, Options("llvm", fuse), graph_passes=False)[0]
    if isinstance(want, IndexOutOfRange):
        with pytest.raises(IndexOutOfRange) as info:
            exe(args)
        assert str(info.value) == str(want), g
        return
    got = exe(args)
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert _close(a, b), f"result {k} differs:\n{g}\ngot {a}\nwant {b}"
    check_donated_run(g, args, got, Options("llvm", fuse, donate=tuple(range(len(args)))))


def check_donated_run(g, args, undonated, options) -> None:
    """`g` compiled with `options.donate` gives the undonated run's results, each with its own
    shape and dtype; a result written into a donated argument is a view of that argument."""
    donated = [np.copy(a) for a in args]
    exe = compile_graph(g, options, graph_passes=False)[0]
    got = exe(donated)
    for k, (a, b) in enumerate(zip(got, undonated)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype), \
            f"donated result {k} is {a.dtype}{a.shape}, want {b.dtype}{b.shape}:\n{g}"
        assert _close(a, b), f"donated result {k} differs:\n{g}\ngot {a}\nwant {b}"
    for j, i in getattr(exe, "donated", ()):
        assert np.shares_memory(got[j], donated[i])
