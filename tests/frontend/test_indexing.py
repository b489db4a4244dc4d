"""Indexing and movement as numpy/JAX users write them: advanced indexing with several integer
arrays (numpy's rule for where their dims go), constant boolean masks, `.at[...]` updates,
einsum over many subscripts (values and gradients against np.einsum), and the errors each
raises: naming the op, the shapes and the user's line, or IndexOutOfRange at run time."""
import numpy as np
import pytest

import nnjit
from nnjit.ir.indexing import TRACED_MASK_HINT
from tests.gradcheck import check_grads
from tests.helpers import run
from tests.op_cases import assert_error_names, compare, here, shape_error

X345 = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
I2 = np.array([[2, 0], [-1, 1]])
J = np.array([3, -4])
MASK34 = np.array([[False, True, False, False], [True, False, False, False],
                   [False, False, False, True]])


# -- advanced indexing -------------------------------------------------------------------------

@pytest.mark.parametrize("idx", [
    np.s_[[0, 1, 2], [1, 2, 3]], np.s_[np.arange(3), [0, 3, 1], :], np.s_[I2, :, J],
    np.s_[:, I2, J], np.s_[I2, J], np.s_[0, I2, J], np.s_[I2, 1, J], np.s_[I2, None, J],
    np.s_[None, :, I2, J], np.s_[..., I2, J], np.s_[MASK34], np.s_[MASK34, 1:],
    np.s_[:, :, [True, False, True, True, False]], np.s_[[True, False, True], [0, 3]],
    np.s_[1:, [[1], [2]], [0, 4, 2]], np.s_[[[0], [2]], ::2, [1, -1]], np.s_[[], []],
    np.s_[np.array([], int), 2], np.s_[[-3, 2], [0, 0], [4, -5]], np.s_[::-1, [0, 1], ::-2]],
    ids=lambda i: repr(i).replace(" ", "").replace("\n", ""))
def test_advanced_indexing_matches_numpy(idx, backend):
    compare(run(lambda v: v[idx], X345, backend=backend), np.array(X345[idx]))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_traced_index_arrays(dtype, backend):
    """x[np.arange(B), labels] (the cross-entropy pick) and mixes with slices, indices traced."""
    rows, labels = np.arange(3, dtype=dtype), np.array([4, -1, 2], dtype)
    got = run(lambda v, a, b: (v[a, :, b], v[:, a, b], v[a, a], v[a, :2, b][..., None]),
              X345, rows, labels, backend=backend)
    compare(got, (X345[rows, :, labels], X345[:, rows, labels], X345[rows, rows],
                  X345[rows, :2, labels][..., None]))


def test_an_index_out_of_range_raises_at_run_time(backend):
    line = here() + 1
    f = nnjit.jit(lambda v, a, b: v[a, b], backend=backend)
    compare(f(X345, np.array([0, 2]), np.array([-4, 3])), X345[[0, 2], [-4, 3]])
    with pytest.raises(nnjit.IndexOutOfRange, match=r"getitem: axis 1 of f32\[3,4,5\]: index 4 "
                       rf"is out of range.*test_indexing.py:{line} "):
        f(X345, np.array([0, 2]), np.array([1, 4]))


def test_a_traced_boolean_mask_is_an_error_with_the_where_hint(backend):
    line = here() + 2
    with pytest.raises(nnjit.ShapeError) as ei:
        run(lambda v: v[v > 3], X345, backend=backend)
    assert "use nnjit.where(mask, x, 0)" in str(ei.value) and TRACED_MASK_HINT in str(ei.value)
    assert_error_names(ei.value, "getitem", [(3, 4, 5)], line)


def test_indexing_errors_name_the_problem(backend):
    err = shape_error(lambda v: v[[0, 1], [0, 1, 2]], X345, backend=backend)
    assert "could not be broadcast together" in str(err) and "(2,) (3,)" in str(err)
    err = shape_error(lambda v: v[np.ones((4, 3), bool)], X345, backend=backend)
    assert "(4, 3) must match the dims (3, 4)" in str(err)
    err = shape_error(lambda v: v[np.array([0.0, 1.0]), 1], X345, backend=backend)
    assert "must be integers or booleans" in str(err)
    err = shape_error(lambda v, i: v[i, 0], X345, np.zeros(2, np.float32), backend=backend)
    assert "must be integers or booleans, got f32[2]" in str(err)


# -- .at updates -------------------------------------------------------------------------------

def test_at_is_functional_and_add_accumulates_duplicates(backend):
    x = np.zeros((3, 2), np.float32)
    got = run(lambda v: (v, v.at[[0, 0, 2]].add(1.0), v.at[np.arange(2), [1, 0]].set(5.0),
                         v.at[MASK34[:, :2]].set(-1.0)), x, backend=backend)
    want_add = np.array([[2, 2], [0, 0], [1, 1]], np.float32)
    want_set = np.array([[0, 5], [5, 0], [0, 0]], np.float32)
    want_mask = np.array([[0, -1], [-1, 0], [0, 0]], np.float32)
    compare(got, (x, want_add, want_set, want_mask))


def test_at_set_keeps_the_last_duplicate_and_min_max_combine_all(backend):
    x = np.array([5, 5, 5, 5], np.int64)
    i = np.array([1, 3, 1, 1, -1])
    v = np.array([7, 2, 9, 4, 8], np.int64)
    got = run(lambda a, i, v: (a.at[i].set(v), a.at[i].min(v), a.at[i].max(v),
                               a.at[i].multiply(v)), x, i, v, backend=backend)
    compare(got, (np.array([5, 4, 5, 8]), np.array([5, 4, 5, 2]), np.array([5, 9, 5, 8]),
                  np.array([5, 7 * 9 * 4 * 5, 5, 2 * 8 * 5])))


def test_at_with_traced_indices_checks_them_at_run_time(backend):
    f = nnjit.jit(lambda v, i: v.at[i].add(v[0]), backend=backend)
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    compare(f(x, np.array([-1, 2])), x + np.array([[0, 0], [0, 0], [0, 2]]))
    with pytest.raises(nnjit.IndexOutOfRange, match="index 3 is out of range"):
        f(x, np.array([3]))


def test_at_errors(backend):
    line = here() + 1
    err = shape_error(lambda v: v.at[0].set(np.ones(3, np.float32)), X345, backend=backend)
    assert_error_names(err, "at.set", [(3,), (4, 5)], line)
    err = shape_error(lambda b: b.at[0].add(True), np.zeros(2, bool), backend=backend)
    assert "use .set" in str(err)


# -- movement composites -----------------------------------------------------------------------

def test_movement_errors_name_the_op_the_shape_and_the_line(backend):
    x = np.zeros((2, 1, 3), np.float32)
    line = here() + 1
    err = shape_error(lambda v: nnjit.squeeze(v, (1, 2)), x, backend=backend)
    assert_error_names(err, "squeeze", [(2, 1, 3)], line)
    assert "cannot squeeze axis 2 of size 3" in str(err)
    assert "repeated axis" in str(shape_error(lambda v: nnjit.expand_dims(v, (0, 0)), x,
                                              backend=backend))
    assert "out of range" in str(shape_error(lambda v: v.expand_dims(5), x, backend=backend))
    assert "do not divide axis 2 of size 3" in str(shape_error(
        lambda v: nnjit.split(v, 2, axis=2), x, backend=backend))
    assert "3 counts for axis 0 of size 2" in str(shape_error(
        lambda v: nnjit.repeat(v, [1, 2, 3], axis=0), x, backend=backend))
    assert "must be static" in str(shape_error(
        lambda v, r: nnjit.repeat(v, r), x, np.array([1, 2]), backend=backend))
    assert "non-negative" in str(shape_error(lambda v: nnjit.tile(v, (-1, 2)), x,
                                             backend=backend))


def test_split_returns_a_list_like_numpy(backend):
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    got = run(lambda v: nnjit.split(v, [2, -1]), x.T, backend=backend)
    assert isinstance(got, list) and len(got) == 3
    for g, w in zip(got, np.split(x.T, [2, -1])):
        compare(g, w)


def test_take_along_axis_matches_numpy_and_checks_indices(backend):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    idx = np.argsort(-x, axis=1)[:, :2]
    f = nnjit.jit(lambda v, i: nnjit.take_along_axis(v, i, axis=1), backend=backend)
    compare(f(x, idx), np.take_along_axis(x, idx, axis=1))
    with pytest.raises(nnjit.IndexOutOfRange, match="take_along_axis: axis 1"):
        f(x, np.full((2, 1, 4), 3))
    err = shape_error(lambda v: nnjit.take_along_axis(v, np.zeros((2, 3), int), 0), x,
                      backend=backend)
    assert "same number of dims" in str(err)


# -- einsum ------------------------------------------------------------------------------------

EINSUM_SPECS = [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("ij,jk", [(2, 3), (3, 4)]), ("ij,kj->ik", [(2, 3), (4, 3)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]), ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("ii", [(3, 3)]), ("ii->i", [(3, 3)]), ("iij->j", [(2, 2, 3)]), ("iii->i", [(2, 2, 2)]),
    ("ij->ji", [(2, 3)]), ("ij->", [(2, 3)]), ("ba", [(2, 3)]), ("i,i", [(3,), (3,)]),
    ("i,j->ij", [(2,), (3,)]), ("...i,i", [(2, 3, 4), (4,)]), ("...", [(2, 3)]),
    ("...ij,...jk->...ik", [(2, 1, 2, 3), (3, 3, 4)]), ("ij,j->i", [(2, 1), (3,)]),
    ("ijk,jil->kl", [(2, 3, 4), (3, 2, 5)]), ("ab,bc,cd->ad", [(2, 3), (3, 4), (4, 2)]),
    ("i,i,i->", [(3,), (3,), (3,)]), ("i->", [(0,)]), (",->", [(), ()]), ("i,->i", [(3,), ()]),
    ("a b , b c", [(2, 3), (3, 2)]), ("ij,ij->ij", [(2, 3), (2, 3)]),
    ("bi,bj->bij", [(2, 3), (2, 2)]),
]


def _operands(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@pytest.mark.parametrize("spec,shapes", EINSUM_SPECS, ids=[s for s, _ in EINSUM_SPECS])
def test_einsum_matches_numpy(spec, shapes, backend):
    xs = _operands(shapes, np.float32)
    want = np.einsum(spec, *[x.astype(np.float64) for x in xs]).astype(np.float32)
    compare(run(lambda *a: nnjit.einsum(spec, *a), *xs, backend=backend), want)


@pytest.mark.parametrize("spec,shapes", [(s, sh) for s, sh in EINSUM_SPECS
                                         if all(np.prod(x) > 0 for x in sh)],
                         ids=[s for s, sh in EINSUM_SPECS if all(np.prod(x) > 0 for x in sh)])
def test_einsum_gradients(spec, shapes):
    xs = _operands(shapes, np.float64, seed=1)
    check_grads(lambda *a: nnjit.einsum(spec, *a), xs, tuple(range(len(xs))))


@pytest.mark.parametrize("spec,shapes,message", [
    ("ij,jk", [(2, 3), (4, 5)], "label 'j' has sizes 3 and 4"),
    ("ij", [(2, 3), (3,)], "has 1 operand terms for 2 operands"),
    ("ijk", [(2, 3)], "name 3 dims of a 2-d operand"),
    ("...i->i", [(2, 3)], "add '...' to the output"),
    ("ij->k", [(2, 3)], "output label 'k'"),
    ("ij->ii", [(2, 3)], "more than once"),
    ("ij->i,j", [(2, 3)], "must be one term"),
    ("i2", [(2, 3)], "invalid character '2'"),
    ("ii", [(2, 3)], "label 'i' has sizes 2 and 3"),
    ("ii->i", [(1, 3)], "different sizes [1, 3]"),
])
def test_einsum_errors(spec, shapes, message, backend):
    line = here() + 1
    err = shape_error(lambda *a: nnjit.einsum(spec, *a), *_operands(shapes, np.float32),
                      backend=backend)
    assert message in str(err), str(err)
    assert_error_names(err, "einsum", [], line)


def test_einsum_refuses_bool_operands(backend):
    err = shape_error(lambda a: nnjit.einsum("ij->i", a), np.ones((2, 3), bool), backend=backend)
    assert "bool operands are not supported" in str(err)
