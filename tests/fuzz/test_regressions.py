"""Minimal regression tests for what the differential fuzzer (tests/fuzz/run.py) found, one per
failure, each named after what broke; the docstring gives the diagnosis and the fuzz seed (of
the generator as it was then: the seeds name other programs now)."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit


def _run(fn, *args, backend: str, fuse: bool = True):
    return nnjit.jit(fn, backend=backend, fuse=fuse)(*args)


def _error(fn, *args, backend: str, fuse: bool = True) -> str:
    with pytest.raises(nnjit.IndexOutOfRange) as e:
        _run(fn, *args, backend=backend, fuse=fuse)
    return str(e.value)


@pytest.mark.parametrize("shape", [(3, 1, 0), (3, 0), (0, 3), (2, 0, 1)])
def test_reduction_of_an_empty_reshape_in_a_fused_kernel(backend, shape):
    """Seed 257 (a gradient graph): sum(reshape(x, (0,))) fused into a reduce kernel crashed
    the lowering with an IndexError: `reshape_coords` (codegen/index.py) matched dim
    blocks by product, which never terminates in a 0 on one side only. Fixed: an empty shape
    maps to zero coordinates (no element is ever computed)."""
    def f(x):
        s = nnjit.sum(nnjit.reshape(x, (0,)))
        return s + s, nnjit.max(nnjit.reshape(x, (0,)) * 2.0, keepdims=True)

    x = np.zeros(shape, np.float32)
    total, mx = _run(f, x, backend=backend)
    assert total == 0.0 and mx.shape == (1,) and mx[0] == -np.inf


def _take_in_a_scan(x, i, xs):
    def body(c, t):
        return c, nnjit.take(x, c, axis=0)      # the index is the carry: checked in the body
    return nnjit.scan(body, i, xs)[1]


@pytest.mark.parametrize("fuse", [False, True])
def test_index_check_inside_a_scan_body(backend, fuse):
    """Seed 389: a scan whose body has the program's only index check did not compile on llvm
    (KeyError 'status' in render.program_function): the body's lowering added the status word
    to its own buffers only, while the entry function zeroes it for any check site. Fixed in
    codegen/lower.py `_scan`: the scan kernel reads and writes the status word,
    which the enclosing program then has."""
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    xs = np.zeros(2, np.int64)
    got = _run(_take_in_a_scan, x, np.int64(-2), xs, backend=backend, fuse=fuse)
    np.testing.assert_array_equal(got, [x[1], x[1]])
    msg = _error(_take_in_a_scan, x, np.int64(5), xs, backend=backend, fuse=fuse)
    assert msg.startswith("take: axis 0 of f32[3,2]: index 5 is out of range; valid: [-3, 3)")


def test_index_error_in_a_scan_body_names_its_line_once(backend):
    """Seed 274: the interpreter's message for a check inside a scan body named the check's
    line and then the scan's ("... at m.py:5 in body at m.py:6 in f"); llvm names the check's
    only. Fixed in ir/evaluate.py: a node with a body does not add its line to an
    IndexOutOfRange raised inside the body."""
    def f(xs, i, logits, labels):
        def body(c, x):
            return c, nnjit.sum(nnjit.one_hot(c, 3))
        _, ys = nnjit.scan(body, i, xs)
        return ys, nnjit.nn.cross_entropy(logits, labels)

    args = (np.zeros(2, np.float32), np.int64(5), np.zeros((2, 3), np.float32))
    # Both checks fail: the one in the scan comes first, as in the program.
    msg = _error(f, *args, np.array([0, 7]), backend=backend)
    assert msg.startswith("one_hot: 3 classes: index 5 is out of range; valid: [0, 3) at ")
    assert msg.count(" at ") == 1 and msg.endswith(" in body"), msg
    assert msg == _error(f, *args, np.array([0, 1]), backend="interp")


def test_constant_out_of_range_indices_raise_when_run(backend):
    """Seed 2315: `take(x, const)` with a constant index out of range raised while compiling,
    in fold_constants (which ran check_index's reference on the constant), with the message
    prefixed "in pass 'fold_constants' (after simplify): " and without the user's line; the
    interpreter raises when the program runs. Fixed in passes/fold.py: a check that fails is
    not folded, so it raises at run time with its own message."""
    def f(x):
        return nnjit.take(x, [0, 7]) * 2.0

    x = np.arange(3, dtype=np.float32)
    nnjit.jit(f, backend=backend).lower(x)          # compiles
    msg = _error(f, x, backend=backend)
    assert msg.startswith("take: axis 0 of f32[3]: index 7 is out of range; valid: [-3, 3) at ")
    assert "test_regressions.py" in msg and "in pass" not in msg, msg


@pytest.mark.parametrize("shapes, axis", [([(0,)] * 3, 0), ([(2, 0), (2, 0)], 1),
                                          ([(0, 2), (0, 1)], 1)])
def test_reduction_of_an_empty_concat_in_a_fused_kernel(backend, shapes, axis):
    """Seed 10268 (a gradient graph): sum(concat of operands all empty along the axis) fused
    into a reduce kernel failed an assert in `_concat` (codegen/loops.py), which
    built the select chain from the non-empty operands only. Fixed: with none, the (never
    evaluated) element is a zero."""
    def f(*xs):
        return nnjit.sum(nnjit.concat(list(xs), axis=axis)) * 2.0

    assert _run(f, *[np.zeros(s) for s in shapes], backend=backend) == 0.0


@pytest.mark.parametrize("fn", [
    lambda x, c, y: nnjit.sum(x, axis=1) + y,
    lambda x, c, y: nnjit.where(c, nnjit.mean(x, axis=1), y),
    lambda x, c, y: nnjit.exp(nnjit.max(x, axis=1)) * y,
    lambda x, c, y: nnjit.broadcast_to(nnjit.sum(x, axis=1), (3, 3)) - y,
], ids=["add", "where", "exp-mul", "broadcast_to"])
def test_a_row_reduction_read_across_rows_is_not_fused(backend, fn):
    """Seed 22265 (a silent wrong answer): where(c, mean(x, axis=1), y) with x, y of shape
    (3, 3). numpy broadcasts the reduced (3,) by trailing dims, so element (i, j) reads row j's
    mean; the fused reduce kernel (one pass per row, the row's accumulator at hand) used row
    i's. Fixed in passes/fusion_rules.py `_reduce`: a reduced value may join an element of the
    domain only where it broadcasts like keepdims (the kernel then is a reduction plus a
    separate elementwise kernel)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3)).astype(np.float32)
    y = rng.standard_normal((3, 3)).astype(np.float32)
    c = np.array([False, True, True])
    want = nnjit.jit(fn, backend="interp", fuse=False)(x, c, y)
    np.testing.assert_allclose(_run(fn, x, c, y, backend=backend), want, rtol=1e-5, atol=1e-6)


def test_a_row_reduction_read_by_row_still_fuses():
    """...while the keepdims-like cases keep their single kernel (softmax's shape)."""
    f = lambda x, y: nnjit.sum(x, axis=0) + y     # noqa: E731  (trailing dims are the rows)
    g = lambda x, y: nnjit.sum(x, axis=1, keepdims=True) + y    # noqa: E731
    x = np.ones((3, 3), np.float32)
    for fn in (f, g):
        assert nnjit.jit(fn, backend="llvm").lower(x, x).explain_fusion().num_kernels == 1
    bad = nnjit.jit(lambda x, y: nnjit.sum(x, axis=1) + y, backend="llvm").lower(x, x)
    assert bad.explain_fusion().num_kernels == 2
    assert any("reads the reduced" in str(d) for d in bad.explain_fusion().decisions)


def test_a_padded_convolution_of_an_empty_image_reads_nothing_out_of_bounds():
    """Found by the fuzzer (seed 697): conv2d with padding over an input of width 0 made its
    im2col load x[-1] (a masked tap's index clamped into [0, w - 1] = [0, -1]); the kernel-IR
    verifier caught it. Indices of empty dims now clamp to 0 (their buffer's one element)."""
    x = np.zeros((2, 3, 3, 0))
    w = np.ones((3, 3, 3, 1))

    def f(x, w):
        return nnjit.conv2d(x, w, stride=(2, 1), padding=((1, 0), (1, 0)))

    want = nnjit.jit(f, backend="interp")(x, w)
    got = nnjit.jit(f, backend="llvm")(x, w)      # NNJIT_VERIFY is on in the suite
    np.testing.assert_array_equal(got, want)


def test_a_product_that_overflows_in_numpys_order_only_is_not_a_failure():
    """Found by the fuzzer (seed 2317): prod over [.., 1.8e308, .., 4.9e-324, ..] is inf in
    numpy's sequential order and 2.04e-14 (the true value) in llvm's blocked one. The oracle
    treats prod like a sum: the wide run shows the element's class depends on the order."""
    from nnjit.ir import Builder, DType, TensorType, prims
    from tests.fuzz.generate import Case
    from tests.fuzz.oracle import check_case

    x = np.array([[-3.064084e-001, 1.912079e-001, 3.239098e+000],
                  [-2.632577e+000, 1.023869e+000, 1.797693e+308],
                  [3.636574e+000, 1.533024e+000, -3.232592e+000],
                  [-5.757769e-001, 4.940656e-324, -6.593689e-001],
                  [1.624613e+000, -2.039678e+000, 1.970743e+000]], np.float64)
    b = Builder("prod_order")
    v = b.input(TensorType((5, 3), DType.F64), "x")
    case = Case(2317, b.build([prims.reduce_prod(v, (0, 1), False)]), [x], {}, "special")
    assert not check_case(case).failures


def test_a_product_whose_partials_overflow_before_a_zero_is_not_a_failure():
    """Found by the fuzzer (seed 3805): prod over three rows of 0, 1, ..., 63 in float32 is 0
    in numpy's order (the zero first) and NaN in llvm's blocked one (63!**3 overflows, then
    times 0). Like XLA's, nnjit's prod reassociates; the oracle's ordered runs show the class
    depends on the order."""
    from nnjit.ir import Builder, DType, TensorType, prims
    from tests.fuzz.generate import Case
    from tests.fuzz.oracle import check_case

    x = np.broadcast_to(np.arange(64, dtype=np.float32), (3, 2, 64)).copy()
    b = Builder("prod_zero")
    v = b.input(TensorType((3, 2, 64), DType.F32), "x")
    case = Case(3805, b.build([prims.reduce_prod(v, (0, 2), False)]), [x], {}, "special")
    assert not check_case(case).failures


def test_the_oracle_takes_a_product_over_a_non_empty_axis_of_an_empty_tensor():
    """Found by the fuzzer (seed 8040): prod over axis 0 of a (3, 0) tensor. The oracle's
    ordered runs reshaped the empty moved array to (0, -1), which numpy cannot infer; the
    result is simply empty."""
    from nnjit.ir import Builder, DType, TensorType, prims
    from tests.fuzz.generate import Case
    from tests.fuzz.oracle import check_case

    b = Builder("prod_empty")
    v = b.input(TensorType((3, 0), DType.F64), "x")
    case = Case(8040, b.build([prims.reduce_prod(v, (0,), False)]), [np.zeros((3, 0))], {},
                "smooth")
    assert not check_case(case).failures
