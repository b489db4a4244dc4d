"""Index-set splitting (codegen/split_ranges.py) and the range folding it relies on
(codegen/subst.py): a serial loop that tests its index against constants becomes one loop per
range, each without the tests, and computes the same bits as the interpreter."""
import numpy as np
import pytest

import nnjit
from nnjit.codegen.analysis import interval, loops_in
from nnjit.codegen.index import c64, clamp, cmp, iadd, imul, in_range, isub, select
from nnjit.codegen import split_ranges
from nnjit.codegen.split_ranges import MAX_PIECES
from nnjit.codegen.subst import substitute, substitute_expr
from nnjit.ir import DType
from nnjit.ir.kernel import Call, Const, If, KOp, Load, Loop, LoopKind, Store, Var
from tests.helpers import assert_close

rng = np.random.default_rng(0)
i = Var("i")


def lowered_kernels(fn, *args):
    program = nnjit.jit(fn, backend="llvm").lower(*args).lowered().program
    return program, [k for k in program.kernels if hasattr(k, "body")]


@pytest.fixture
def same_as_unsplit(monkeypatch):
    """check(fn, *args): the interpreter's results (to the backend's tolerance), and the same
    bits as the program compiled without splitting (`bitwise=False` where a REDUCE loop may
    reassociate differently in the split code)."""
    def check(fn, *args, bitwise=True):
        got = nnjit.tree_leaves(nnjit.jit(fn, backend="llvm")(*args))
        want = nnjit.tree_leaves(nnjit.jit(fn, backend="interp")(*args))
        with monkeypatch.context() as m:
            m.setenv("NNJIT_CACHE", "0")
            m.setattr(split_ranges, "MAX_PIECES", 1)
            unsplit = nnjit.tree_leaves(nnjit.jit(fn, backend="llvm")(*args))
        for g, w, u in zip(got, want, unsplit):
            assert_close(g, w)
            if bitwise:
                np.testing.assert_array_equal(g, u)
            else:
                assert_close(g, u)
    return check


def gate_grads(h: int):
    """The LSTM's backward pattern: four [B, H] gate gradients padded into one [B, 4H]."""
    def f(a, b, c, d):
        parts = [a * b, nnjit.tanh(b) * c, c * (1.0 - d), d * a]
        out = 0.0
        for k, p in enumerate(parts):
            out = out + nnjit.pad(p, [(0, 0), (k * h, (3 - k) * h)])
        return out
    return f


# -- range folding --------------------------------------------------------------------------------

def test_the_ranges_decide_comparisons_min_max_and_where():
    ext = {"i": 256}
    x = Load("x", i, DType.F32)
    shifted = iadd(i, c64(-768))
    assert substitute_expr(in_range(shifted, 0, 256), {}, ext) == Const(False, DType.BOOL)
    assert substitute_expr(in_range(i, 0, 256), {}, ext) == Const(True, DType.BOOL)
    assert substitute_expr(clamp(i, 0, 255), {}, ext) == i
    assert substitute_expr(clamp(iadd(i, c64(10)), 0, 255), {}, ext) == \
        Call(KOp.MIN, (iadd(i, c64(10)), c64(255)), DType.I64)   # only the max is decided
    fill = Const(0.0, DType.F32)
    assert substitute_expr(select(in_range(i, 0, 300), x, fill), {}, ext) == x
    assert substitute_expr(select(cmp(KOp.GE, i, c64(256)), x, fill), {}, ext) == fill
    # Undecided: i < 100 over [0, 256); and without extents nothing is folded.
    assert substitute_expr(cmp(KOp.LT, i, c64(100)), {}, ext) == cmp(KOp.LT, i, c64(100))
    assert substitute_expr(in_range(i, 0, 256), {}) == in_range(i, 0, 256)


def test_logic_and_ifs_fold_once_a_side_is_known():
    ext = {"i": 4}
    unknown = Call(KOp.LT, (Load("n", c64(0), DType.I64), c64(3)), DType.BOOL)
    never = cmp(KOp.GE, i, c64(4))
    assert substitute_expr(Call(KOp.AND, (never, unknown), DType.BOOL), {}, ext) == \
        Const(False, DType.BOOL)
    assert substitute_expr(Call(KOp.OR, (never, unknown), DType.BOOL), {}, ext) == unknown
    assert substitute_expr(Call(KOp.NOT, (never,), DType.BOOL), {}, ext) == \
        Const(True, DType.BOOL)
    store = Store("y", i, Const(1.0, DType.F32))
    assert substitute((If(never, (store,)),), {}, ext) == ()
    assert substitute((If(cmp(KOp.LT, i, c64(4)), (store,)),), {}, ext) == (store,)
    # A loop inside adds its own variable's range.
    inner = Loop("j", 3, (If(cmp(KOp.LT, Var("j"), c64(3)), (store,)),))
    assert substitute((inner,), {}, ext) == (Loop("j", 3, (store,)),)


# -- splitting ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h", [1, 7, 256])
def test_padded_gate_gradients_run_as_one_loop_per_gate(dtype, h, same_as_unsplit):
    args = [rng.standard_normal((5, h)).astype(dtype) for _ in range(4)]
    f = gate_grads(h)
    _, kernels = lowered_kernels(f, *args)
    k = kernels[-1]                     # (h = 1: tanh is a kernel of its own, not broadcast)
    loops = [lp for lp in loops_in(k.body) if lp.kind == LoopKind.SERIAL]
    assert [lp.extent for lp in loops] == [h] * 4
    assert "where" not in str(k.body) and "min(" not in str(k.body)
    same_as_unsplit(f, *args)


def test_concatenations_of_uneven_and_empty_parts(same_as_unsplit):
    def f(a, b, c, d):
        return nnjit.exp(nnjit.concatenate([a, b, c, d], axis=1)) * 2.0
    args = [rng.standard_normal((3, n)).astype(np.float32) for n in (5, 1, 0, 12)]
    _, (k,) = lowered_kernels(f, *args)
    assert sorted(lp.extent for lp in loops_in(k.body) if lp.kind == LoopKind.SERIAL) == \
        [1, 5, 12]
    same_as_unsplit(f, *args)


def test_a_concatenation_of_too_many_parts_stays_one_loop(same_as_unsplit):
    parts = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(MAX_PIECES + 1)]
    f = lambda *xs: nnjit.concatenate(list(xs), axis=1) + 1.0  # noqa: E731
    _, (k,) = lowered_kernels(f, *parts)
    serial = [lp for lp in loops_in(k.body) if lp.kind == LoopKind.SERIAL]
    assert [lp.extent for lp in serial] == [3 * (MAX_PIECES + 1)]
    same_as_unsplit(f, *parts)


def test_pads_on_both_sides_and_a_padded_then_sliced_row(same_as_unsplit):
    def f(x):
        p = nnjit.pad(nnjit.relu(x), [(0, 0), (3, 2)], constant_values=-1.0)
        return p * 2.0, p[:, 2:6] + 1.0
    x = rng.standard_normal((4, 6)).astype(np.float32)
    same_as_unsplit(f, x)


def test_parallel_and_reduction_loops_are_left_whole():
    par = Loop("i", 8, (Store("y", i, select(cmp(KOp.LT, i, c64(4)), Const(1.0, DType.F32),
                                                 Const(2.0, DType.F32))),), LoopKind.PARALLEL)
    red = Loop("i", 8, par.body, LoopKind.REDUCE)
    assert split_loop_ranges_of((par, red)) == (par, red)


def test_unbounded_offsets_and_nonlinear_tests_do_not_cut():
    n = Load("n", c64(0), DType.I64)    # an offset no loop bounds
    unbounded = cmp(KOp.LT, iadd(i, n), c64(4))
    nonlinear = cmp(KOp.LT, Call(KOp.MOD, (i, c64(3)), DType.I64), c64(1))
    for test in (unbounded, nonlinear):
        body = (Store("y", i, select(test, Const(1.0, DType.F32), Const(2.0, DType.F32))),)
        loop = Loop("j", 4, (Loop("i", 8, body),), LoopKind.PARALLEL)
        assert split_loop_ranges_of((loop,)) == (loop,)


def test_an_offset_bounded_by_another_loop_cuts_where_the_test_starts_and_stops_depending_on_it():
    # i + j < 4 with j in [0, 4): true for every j while i < 1, false for every j from i = 4.
    j = Var("j")
    one, two = Const(1.0, DType.F32), Const(2.0, DType.F32)
    test = cmp(KOp.LT, iadd(i, j), c64(4))
    body = (Store("y", iadd(imul(j, c64(8)), i), select(test, one, two)),)
    (outer,) = split_loop_ranges_of((Loop("j", 4, (Loop("i", 8, body),), LoopKind.PARALLEL),))
    first, middle, last = outer.body
    assert (first.extent, middle.extent, last.extent) == (1, 3, 4)
    assert "where" not in str(first.body) and "where" not in str(last.body)
    assert "where" in str(middle.body)
    # An inner loop's variable bounds the offset too: an im2col row's taps.
    tap = Loop("k", 3, (Store("y", iadd(imul(i, c64(3)), Var("k")),
                              select(cmp(KOp.GE, iadd(i, isub(Var("k"), c64(1))), c64(0)),
                                     one, two)),), LoopKind.SERIAL)
    pieces = split_loop_ranges_of((Loop("i", 8, (tap,)),))
    assert [p.extent for p in pieces] == [1, 7]
    assert "where" not in str(pieces[1].body)


def test_divisions_and_remainders_of_bounded_indices_are_bounded():
    ext = {"i": 25}
    row, tap = Call(KOp.DIV, (i, c64(5)), DType.I64), Call(KOp.MOD, (i, c64(5)), DType.I64)
    assert interval(row, ext) == (0, 4) and interval(tap, ext) == (0, 4)
    assert interval(Call(KOp.MOD, (iadd(i, c64(50)), c64(100)), DType.I64), ext) == (50, 74)
    negative = Call(KOp.DIV, (iadd(i, c64(-3)), c64(5)), DType.I64)
    assert interval(negative, ext) == (-float("inf"), float("inf"))
    assert substitute_expr(cmp(KOp.LT, iadd(tap, c64(23)), c64(28)), {}, ext) == \
        Const(True, DType.BOOL)


@pytest.mark.parametrize("padding", [0, 1, 2, ((2, 0), (1, 3))])
@pytest.mark.parametrize("stride", [1, 2])
def test_padded_convolutions_and_pools_split_their_borders_from_the_interior(
        padding, stride, same_as_unsplit):
    x = rng.standard_normal((3, 2, 11, 9)).astype(np.float32)
    w = (0.2 * rng.standard_normal((4, 2, 5, 3))).astype(np.float32)

    def f(x, w):
        y = nnjit.relu(nnjit.nn.conv2d(x, w, stride=stride, padding=padding))
        return nnjit.nn.max_pool2d(y, 3, stride=2, padding=1), \
            nnjit.nn.avg_pool2d(x, 2, padding=1)
    same_as_unsplit(f, x, w, bitwise=False)     # the pools' windows are REDUCE loops
    same_as_unsplit(nnjit.grad(lambda x, w: nnjit.tanh(f(x, w)[0]).sum(), argnums=(0, 1)), x, w,
                    bitwise=False)
    if padding == 2 and stride == 1:
        _, kernels = lowered_kernels(f, x, w)
        im2col = [k for k in kernels if k.name.endswith("im2col")]
        assert im2col
        # The interior of every row (taps inside the image for every kernel offset) is a copy.
        assert any("where" not in str(lp.body) for k in im2col for lp in loops_in(k.body)
                   if lp.kind == LoopKind.SERIAL and not any(loops_in(lp.body)))


def test_a_decreasing_test_cuts_where_it_turns():
    # 10 - 3 i > 0 holds for i <= 3: the loop over 8 splits at 4.
    test = cmp(KOp.GT, iadd(Call(KOp.MUL, (i, c64(-3)), DType.I64), c64(10)), c64(0))
    body = (Store("y", i, select(test, Const(1.0, DType.F32), Const(2.0, DType.F32))),)
    (a, b) = split_loop_ranges_of((Loop("i", 8, body),))
    assert (a.extent, b.extent) == (4, 4)
    assert a.body == (Store("y", i, Const(1.0, DType.F32)),)
    assert b.body == (Store("y", iadd(i, c64(4)), Const(2.0, DType.F32)),)


def split_loop_ranges_of(stmts):
    return split_ranges._stmts(tuple(stmts), {})


def test_the_lstm_step_backward_scan_has_no_selects(same_as_unsplit):
    """The char-LSTM's training step: its reverse scan's gate-gradient kernel is split."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    from models import CharLSTM

    model = CharLSTM(vocab=11, embed=4, hidden=8)
    params = model.init(seed=0)
    x = rng.integers(0, 11, (5, 3))
    y = rng.integers(0, 11, (5, 3))

    def step(p, x, y):
        def loss(p):
            z = model.apply(p, x)[0]
            return nnjit.nn.cross_entropy(z.reshape(-1, 11), y.reshape(-1))
        return nnjit.grad(loss)(p)

    program, _ = lowered_kernels(step, params, x, y)
    scans = [k for k in program.kernels if type(k).__name__ == "ScanKernel"]
    assert len(scans) == 2
    backward = str(scans[1].body)
    assert "where" not in backward.split("gemm")[0]
    same_as_unsplit(step, params, x, y)
