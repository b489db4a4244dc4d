"""Data movement against numpy: reshape (-1, size 0), transpose (negative axes), broadcast_to,
concat, slicing (steps, negative steps, empty slices), pad, take (negative and clamped indices)
and scatter_add (repeated indices), on hypothesis-drawn shapes."""
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import nnjit
from nnjit.ir import prims as P
from tests.helpers import run
from tests.op_cases import (ALL, F32, HYPOTHESIS, I32, I64, MOV, NUMERIC, assert_error_names,
                            case_params, check_case, clamped, compare, expect_scatter_add,
                            expect_take, here, permuted, shape_error, shapes_st, uniform)


@pytest.mark.parametrize("case,dtype", case_params(MOV))
def test_forward(case, dtype, backend):
    check_case(case, case.make_inputs(np.random.default_rng(0), dtype), backend)


def _values(seed, shape, dtype):
    return uniform(-9, 9)(np.random.default_rng(seed), tuple(shape), np.dtype(dtype))


SEED, DTYPE = st.integers(0, 2**32 - 1), st.sampled_from(ALL)


@st.composite
def reshape_target(draw, shape):
    """A shape of the same size: dims merged in consecutive groups, 1s inserted, and one dim
    possibly written as -1 (when it is determined, i.e. the other dims are not 0)."""
    dims, out = list(shape), []
    while dims:
        k = draw(st.integers(1, len(dims)))
        out.append(int(np.prod(dims[:k])))
        dims = dims[k:]
        if draw(st.booleans()):
            out.append(1)
    if out and draw(st.booleans()):
        j = draw(st.integers(0, len(out) - 1))
        if int(np.prod(out[:j] + out[j + 1:])) != 0:
            out[j] = -1
    return tuple(out)


@HYPOTHESIS
@given(shape=shapes_st(), data=st.data(), dtype=DTYPE, seed=SEED)
def test_reshape(backend, shape, data, dtype, seed):
    target = data.draw(reshape_target(shape), label="target")
    x = _values(seed, shape, dtype)
    flat = x.ravel()
    size = int(np.prod([d for d in target if d != -1]))
    full = tuple(flat.size // size if d == -1 else d for d in target)
    want = np.array([flat[i] for i in range(flat.size)], x.dtype).reshape(full)  # C order
    compare(run(lambda v: v.reshape(target), x, backend=backend), want)


@HYPOTHESIS
@given(shape=shapes_st(min_dims=1), data=st.data(), dtype=DTYPE, seed=SEED)
def test_transpose(backend, shape, data, dtype, seed):
    nd = len(shape)
    perm = data.draw(st.permutations(range(nd)), label="perm")
    perm = tuple(p - nd if data.draw(st.booleans()) else p for p in perm)
    x = _values(seed, shape, dtype)
    compare(run(lambda v: nnjit.transpose(v, perm), x, backend=backend), permuted(x, perm))


@HYPOTHESIS
@given(target=shapes_st(), data=st.data(), dtype=DTYPE, seed=SEED)
def test_broadcast_to(backend, target, data, dtype, seed):
    lead = data.draw(st.integers(0, len(target)), label="dropped leading dims")
    src = tuple(1 if data.draw(st.booleans()) else d for d in target[lead:])
    x = _values(seed, src, dtype)
    want = np.empty(target, x.dtype)
    for idx in np.ndindex(*target):
        want[idx] = x[tuple(0 if d == 1 else i for i, d in zip(idx[lead:], src))]
    compare(run(lambda v: nnjit.broadcast_to(v, target), x, backend=backend), want)


@HYPOTHESIS
@given(shape=shapes_st(min_dims=1), data=st.data(), dtype=DTYPE, seed=SEED)
def test_concat(backend, shape, data, dtype, seed):
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1), label="axis")
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=4), label="sizes")
    parts = [_values(seed + i, shape[:axis % nd] + (n,) + shape[axis % nd + 1:], dtype)
             for i, n in enumerate(sizes)]
    want = np.empty(shape[:axis % nd] + (sum(sizes),) + shape[axis % nd + 1:], dtype)
    at = 0
    for p in parts:
        want[(slice(None),) * (axis % nd) + (slice(at, at + p.shape[axis % nd]),)] = p
        at += p.shape[axis % nd]
    got = run(lambda *ps: nnjit.concat(ps, axis=axis), *parts, backend=backend)
    compare(got, want)


def _bound(n):
    return st.one_of(st.none(), st.integers(-n - 2, n + 2))


@st.composite
def index_expr(draw, shape):
    """A basic index: per dim a slice (any bounds, steps in -3..3), an int or nothing, with None
    and one Ellipsis sprinkled in."""
    items = []
    for n in shape:
        kind = draw(st.sampled_from(["slice", "slice", "int"] if n else ["slice"]))
        if kind == "int":
            items.append(draw(st.integers(-n, n - 1)))
        else:
            step = draw(st.one_of(st.none(), st.integers(-3, 3).filter(bool)))
            items.append(slice(draw(_bound(n)), draw(_bound(n)), step))
    if items and draw(st.booleans()):        # trailing dims may be left implicit
        items = items[:draw(st.integers(0, len(items)))]
    if draw(st.booleans()):
        k = draw(st.integers(0, len(items)))
        lo = draw(st.integers(0, k))
        items = items[:lo] + [Ellipsis] + items[k:]
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    return tuple(items)


@HYPOTHESIS
@given(shape=shapes_st(max_dims=3, max_side=5), data=st.data(), dtype=DTYPE, seed=SEED)
def test_getitem_slices(backend, shape, data, dtype, seed):
    idx = data.draw(index_expr(shape), label="index")
    x = _values(seed, shape, dtype)
    compare(run(lambda v: v[idx], x, backend=backend), np.array(x[idx]))


@pytest.mark.parametrize("idx", [np.s_[::-1, ::-2], np.s_[-100::-1], np.s_[4:-6:-1],
                                 np.s_[1:1], np.s_[:, 5:], np.s_[-1:-100:-3, 3:0:-1],
                                 np.s_[..., None, ::3], np.s_[None, -2, ...]])
def test_slice_edge_cases(idx, backend):
    x = np.arange(20, dtype=np.int64).reshape(4, 5)
    compare(run(lambda v: v[idx], x, backend=backend), np.array(x[idx]))


@HYPOTHESIS
@given(shape=shapes_st(max_dims=3), data=st.data(), dtype=st.sampled_from(NUMERIC), seed=SEED)
def test_pad(backend, shape, data, dtype, seed):
    pads = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in shape)
    value = data.draw(st.sampled_from([0, 1, -2]), label="value")
    x = _values(seed, shape, dtype)
    want = np.full(tuple(n + lo + hi for n, (lo, hi) in zip(shape, pads)), value, x.dtype)
    want[tuple(slice(lo, lo + n) for n, (lo, _) in zip(shape, pads))] = x
    got = run(lambda v: nnjit.pad(v, pads, constant_values=value), x, backend=backend)
    compare(got, want)


@HYPOTHESIS
@given(shape=shapes_st(min_dims=1, max_dims=3), data=st.data(), dtype=DTYPE, seed=SEED)
def test_take(backend, shape, data, dtype, seed):
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1), label="axis")
    n = shape[axis % nd]
    ishape = data.draw(shapes_st(max_dims=2, max_side=3) if n else st.just((0,)), label="ishape")
    idx = np.random.default_rng(seed).integers(-n, max(n, 1), ishape)
    idx = idx.astype(data.draw(st.sampled_from([I32, I64]), label="index dtype"))
    x = _values(seed, shape, dtype)
    got = run(lambda v, i: nnjit.take(v, i, axis=axis), x, idx, backend=backend)
    compare(got, expect_take(axis)(x, idx))
    mode = data.draw(st.sampled_from(["clip", "wrap", "promise_in_bounds"]), label="mode")
    if n:   # out-of-range indices with an opt-out mode
        wide = np.random.default_rng(seed + 1).integers(-n - 2, n + 3, ishape).astype(idx.dtype)
        got = run(lambda v, i: nnjit.take(v, i, axis=axis, mode=mode), x, wide, backend=backend)
        want = (expect_take(axis)(x, wide) if mode == "promise_in_bounds" else
                np.take(x, wide, axis=axis, mode=mode))
        compare(got, want)


def test_take_negative_and_clamped_indices(backend):
    """The primitive itself (promise_in_bounds) wraps negative indices once and clamps the
    rest, so no index can read out of bounds."""
    x = np.arange(5, dtype=F32) * 10
    idx = np.array([0, -1, -5, -6, -100, 4, 5, 100])
    # -1 -> 4 and -5 -> 0 wrap; -6, -100 wrap once and clamp to 0; 5 and 100 clamp to 4.
    want = np.array([0, 40, 0, 0, 0, 40, 40, 40], F32)
    compare(run(lambda v, i: nnjit.take(v, i, mode="promise_in_bounds"), x, idx,
                backend=backend), want)
    np.testing.assert_array_equal(clamped(idx, 5), [0, 4, 0, 0, 0, 4, 4, 4])


@pytest.mark.parametrize("bad", [5, 100, 2**62, -6, -(2**63)])
def test_take_out_of_range_raises(backend, bad):
    """By default an index outside [-n, n) is an IndexOutOfRange naming the op, the value, the
    valid range and the user's line, on every backend (as numpy and torch raise)."""
    x = np.arange(15, dtype=F32).reshape(5, 3)
    f = nnjit.jit(lambda v, i: nnjit.take(v, i, axis=0), backend=backend)
    np.testing.assert_array_equal(f(x, np.array([0, 4, -5])), x[[0, 4, -5]])
    line = here() - 2
    with pytest.raises(nnjit.IndexOutOfRange) as info:
        f(x, np.array([1, bad, 2]))
    msg = str(info.value)
    assert f"index {bad} is out of range" in msg and "[-5, 5)" in msg, msg
    assert "take: axis 0 of f32[5,3]" in msg and f"test_ops_movement.py:{line}" in msg, msg
    np.testing.assert_array_equal(f(x, np.array([3])), x[[3]])   # the next call is clean


@HYPOTHESIS
@given(shape=shapes_st(min_dims=1, max_dims=3, min_side=1), data=st.data(),
       dtype=st.sampled_from(NUMERIC), seed=SEED)
def test_scatter_add(backend, shape, data, dtype, seed):
    axis = data.draw(st.integers(0, len(shape) - 1), label="axis")
    ishape = data.draw(shapes_st(max_dims=2, max_side=4), label="ishape")
    n = shape[axis]
    rng = np.random.default_rng(seed)
    idx = rng.integers(-n - 1, n + 1, ishape)      # small range: repeats, negatives, clamping
    upd = _values(seed, shape[:axis] + ishape + shape[axis + 1:], dtype)
    got = run(lambda i, u: P.scatter_add(i, u, shape, axis), idx, upd, backend=backend)
    compare(got, expect_scatter_add(shape, axis)(idx, upd))


def test_scatter_add_repeated_indices_accumulate(backend):
    idx = np.array([1, 1, 1, 3, -1, 0])
    upd = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    got = run(lambda i, u: P.scatter_add(i, u, (4,), 0), idx, upd, backend=backend)
    compare(got, np.array([32.0, 7.0, 0.0, 24.0]))


# -- shape errors ------------------------------------------------------------------------------

def test_error_reshape_size(backend):
    line = here() + 1
    err = shape_error(lambda v: v.reshape(5, 2), np.ones((3, 4), F32), backend=backend)
    assert_error_names(err, "reshape", [(3, 4), (5, 2)], line)


def test_error_reshape_minus_one_does_not_divide(backend):
    line = here() + 1
    err = shape_error(lambda v: v.reshape(-1, 5), np.ones((3, 4), F32), backend=backend)
    assert_error_names(err, "reshape", [(3, 4), (-1, 5)], line)


def test_error_transpose_bad_perm(backend):
    line = here() + 1
    err = shape_error(lambda v: nnjit.transpose(v, (0, 0, 1)), np.ones((2, 3, 4), F32),
                      backend=backend)
    assert_error_names(err, "transpose", [(2, 3, 4)], line)


def test_error_broadcast_to(backend):
    line = here() + 1
    err = shape_error(lambda v: nnjit.broadcast_to(v, (3, 4)), np.ones((2, 4), F32),
                      backend=backend)
    assert_error_names(err, "broadcast_to", [(2, 4), (3, 4)], line)


def test_error_concat_shapes_differ_off_axis(backend):
    line = here() + 1
    err = shape_error(lambda a, b: nnjit.concat([a, b], axis=1), np.ones((2, 3), F32),
                      np.ones((3, 3), F32), backend=backend)
    assert_error_names(err, "concat", [(2, 3), (3, 3)], line)


def test_error_getitem_index_out_of_bounds(backend):
    line = here() + 1
    err = shape_error(lambda v: v[1, 4], np.ones((2, 3), F32), backend=backend)
    assert_error_names(err, "getitem", [(2, 3)], line)


def test_error_pad_negative(backend):
    line = here() + 1
    err = shape_error(lambda v: nnjit.pad(v, ((0, -1), (1, 1))), np.ones((2, 3), F32),
                      backend=backend)
    assert_error_names(err, "pad", [], line)
    assert "((0, -1), (1, 1))" in str(err)


def test_error_take_float_indices(backend):
    line = here() + 1
    err = shape_error(lambda v, i: nnjit.take(v, i), np.ones((2, 3), F32), np.ones(2, F32),
                      backend=backend)
    assert_error_names(err, "take", [(2,)], line)


def test_error_take_float_index_array(backend):
    """Constant float indices are refused (numpy.take does), not truncated."""
    line = here() + 1
    err = shape_error(lambda v: nnjit.take(v, [1.7, 3.2]), np.ones((2, 3), F32), backend=backend)
    assert_error_names(err, "take", [(2,)], line)


def test_error_scatter_add_updates_shape(backend):
    line = here() + 1
    err = shape_error(lambda i, u: P.scatter_add(i, u, (4, 3), 0), np.zeros(2, I64),
                      np.ones((3, 3), F32), backend=backend)
    assert_error_names(err, "scatter_add", [(3, 3), (2, 3)], line)


def test_take_from_a_constant_table(backend):
    """The table may be a numpy array (captured as a constant), the indices traced."""
    table = np.arange(10, dtype=F32) * 3
    got = run(lambda i: nnjit.take(table, i), np.array([9, 0, -1]), backend=backend)
    compare(got, table[[9, 0, -1]])
