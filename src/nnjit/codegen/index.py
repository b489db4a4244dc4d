"""Scalar expression constructors for the kernel IR, with the constant folding and algebraic
identities that keep index arithmetic affine and readable (x*1, x+0, x//1, x%1, coords of
extent-1 dims), plus strided views of buffers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..ir import DType
from ..ir.kernel import Call, Const, Expr, KOp, Load, Var

I64 = DType.I64


def c64(v: int) -> Const:
    return Const(int(v), I64)


def is_const(e: Expr, v=None) -> bool:
    return isinstance(e, Const) and (v is None or e.value == v)


def _is_floor_multiple(e: Expr, x: Expr, n: Expr) -> bool:
    """e == (x // n) * n, syntactically."""
    return (isinstance(e, Call) and e.op == KOp.MUL and e.args[1] == n
            and isinstance(e.args[0], Call) and e.args[0].op == KOp.DIV
            and e.args[0].args == (x, n))


def iadd(a: Expr, b: Expr) -> Expr:
    # (x // n) * n + x % n -> x, also at the end of a longer sum: unravelling an index and
    # ravelling it again (a reshape read back in the same layout) costs nothing.
    if isinstance(b, Call) and b.op == KOp.MOD:
        x, n = b.args
        if _is_floor_multiple(a, x, n):
            return x
        if isinstance(a, Call) and a.op == KOp.ADD and _is_floor_multiple(a.args[1], x, n):
            return iadd(a.args[0], x)
    if is_const(a) and is_const(b):
        return c64(a.value + b.value)
    if is_const(a, 0):
        return b
    if is_const(b, 0):
        return a
    if is_const(a):
        a, b = b, a
    # (x + c1) + c2 -> x + (c1 + c2): keeps offsets folded.
    if is_const(b) and isinstance(a, Call) and a.op == KOp.ADD and is_const(a.args[1]):
        return iadd(a.args[0], c64(a.args[1].value + b.value))
    return Call(KOp.ADD, (a, b), I64)


def isub(a: Expr, b: Expr) -> Expr:
    if is_const(b):
        return iadd(a, c64(-b.value))
    if is_const(a) and is_const(b):
        return c64(a.value - b.value)
    return Call(KOp.SUB, (a, b), I64)


def imul(a: Expr, b: Expr) -> Expr:
    if is_const(a) and is_const(b):
        return c64(a.value * b.value)
    if is_const(a):
        a, b = b, a
    if is_const(b, 0):
        return c64(0)
    if is_const(b, 1):
        return a
    return Call(KOp.MUL, (a, b), I64)


def idiv(a: Expr, n: int) -> Expr:
    """Floor division of a non-negative index by a positive constant."""
    if n == 1:
        return a
    if is_const(a):
        return c64(a.value // n)
    return Call(KOp.DIV, (a, c64(n)), I64)


def imod(a: Expr, n: int) -> Expr:
    if n == 1:
        return c64(0)
    if is_const(a):
        return c64(a.value % n)
    return Call(KOp.MOD, (a, c64(n)), I64)


def imin(a: Expr, b: Expr) -> Expr:
    if is_const(a) and is_const(b):
        return c64(min(a.value, b.value))
    return Call(KOp.MIN, (a, b), I64)


def imax(a: Expr, b: Expr) -> Expr:
    if is_const(a) and is_const(b):
        return c64(max(a.value, b.value))
    return Call(KOp.MAX, (a, b), I64)


def clamp(a: Expr, lo: int, hi: int) -> Expr:
    """a clamped into [lo, hi] (used so data-dependent or masked indices stay in bounds). An
    empty range (hi < lo: a dim of size 0, whose buffer still has one element) clamps to lo."""
    return imin(imax(a, c64(lo)), c64(max(hi, lo)))


def cmp(op: KOp, a: Expr, b: Expr) -> Expr:
    if is_const(a) and is_const(b):
        py = {KOp.LT: a.value < b.value, KOp.LE: a.value <= b.value, KOp.GT: a.value > b.value,
              KOp.GE: a.value >= b.value, KOp.EQ: a.value == b.value, KOp.NE: a.value != b.value}
        return Const(py[op], DType.BOOL)
    return Call(op, (a, b), DType.BOOL)


def land(a: Expr, b: Expr) -> Expr:
    if is_const(a):
        return b if a.value else a
    if is_const(b):
        return a if b.value else b
    return Call(KOp.AND, (a, b), DType.BOOL)


def select(c: Expr, a: Expr, b: Expr) -> Expr:
    if is_const(c):
        return a if c.value else b
    if a == b:
        return a
    return Call(KOp.WHERE, (c, a, b), a.dtype)


def in_range(a: Expr, lo: int, hi: int) -> Expr:
    """lo <= a < hi, as a bool expression (folded when trivially true)."""
    return land(cmp(KOp.GE, a, c64(lo)), cmp(KOp.LT, a, c64(hi)))


def ravel(coords: Sequence[Expr], shape: Sequence[int]) -> Expr:
    """The row-major linear index of `coords` in `shape`."""
    out: Expr = c64(0)
    for c, s in zip(coords, contiguous_strides(shape)):
        out = iadd(out, imul(c, c64(s)))
    return out


def unravel(lin: Expr, shape: Sequence[int]) -> list[Expr]:
    out = []
    for s, st in zip(shape, contiguous_strides(shape)):
        out.append(c64(0) if s == 1 else imod(idiv(lin, st), s) if st * s != _total(shape)
                   else idiv(lin, st))
    return out


def _total(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def reshape_coords(coords: Sequence[Expr], out_shape: Sequence[int],
                   in_shape: Sequence[int]) -> list[Expr]:
    """Coordinates in `in_shape` of the element at `coords` of the reshaped `out_shape`.

    Dims are matched in blocks of equal product, so inserting or removing size-1 dims and
    merging/splitting contiguous dims need no division unless a block really reshuffles."""
    out_shape, in_shape = list(out_shape), list(in_shape)
    if 0 in in_shape:     # no elements: the coordinates are never evaluated
        return [c64(0)] * len(in_shape)
    result: list[Expr] = []
    i = j = 0
    while i < len(out_shape) or j < len(in_shape):
        # Size-1 dims map to coordinate 0 and consume nothing on the other side.
        if j < len(in_shape) and in_shape[j] == 1:
            result.append(c64(0))
            j += 1
            continue
        if i < len(out_shape) and out_shape[i] == 1:
            i += 1
            continue
        i0, j0 = i, j
        po, pi = out_shape[i], in_shape[j]
        i += 1
        j += 1
        while po != pi:
            if po < pi:
                po *= out_shape[i]
                i += 1
            else:
                pi *= in_shape[j]
                j += 1
        if i - i0 == 1 and j - j0 == 1:
            result.append(coords[i0])
        else:
            lin = ravel(coords[i0:i], out_shape[i0:i])
            result.extend(unravel(lin, in_shape[j0:j]))
    return result


@dataclass(frozen=True)
class View:
    """A strided view of a buffer: element `coords` is at offset + sum(coords * strides)."""

    buf: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @staticmethod
    def contiguous(buf: str, shape: Sequence[int], offset: int = 0) -> "View":
        return View(buf, tuple(shape), contiguous_strides(shape), offset)

    def index(self, coords: Sequence[Expr]) -> Expr:
        out: Expr = c64(self.offset)
        for c, s, d in zip(coords, self.strides, self.shape):
            if d != 1:
                out = iadd(out, imul(c, c64(s)))
        return out

    def load(self, coords: Sequence[Expr], dtype: DType) -> Load:
        return Load(self.buf, self.index(coords), dtype)

    # -- movement ops as view transformations (None when no strided view exists) ------------
    def transpose(self, perm: Sequence[int]) -> "View":
        return View(self.buf, tuple(self.shape[p] for p in perm),
                    tuple(self.strides[p] for p in perm), self.offset)

    def broadcast_to(self, shape: Sequence[int]) -> "View":
        lead = len(shape) - len(self.shape)
        strides = [0] * lead + [0 if d == 1 and s != 1 else st for d, s, st in
                                zip(self.shape, shape[lead:], self.strides)]
        return View(self.buf, tuple(shape), tuple(strides), self.offset)

    def slice(self, starts, steps, shape) -> "View":
        offset = self.offset + sum(a * st for a, st in zip(starts, self.strides))
        return View(self.buf, tuple(shape), tuple(st * s for st, s in zip(self.strides, steps)),
                    offset)

    def reshape(self, shape: Sequence[int]) -> "View | None":
        """A view with the new shape, or None when the memory layout cannot express it
        (the no-copy reshape test numpy uses: each block of old dims with the same product as a
        block of new dims must be contiguous within itself)."""
        shape = tuple(shape)
        if _total(shape) == 0:
            return View(self.buf, shape, contiguous_strides(shape), self.offset)
        old = [(d, s) for d, s in zip(self.shape, self.strides) if d != 1]
        new = [d for d in shape if d != 1]
        new_strides: list[int] = []
        i = j = 0
        while i < len(old) and j < len(new):
            po, pn, i1, j1 = old[i][0], new[j], i + 1, j + 1
            while po != pn:
                if po < pn:
                    po, i1 = po * old[i1][0], i1 + 1
                else:
                    pn, j1 = pn * new[j1], j1 + 1
            if any(old[k][1] != old[k + 1][0] * old[k + 1][1] for k in range(i, i1 - 1)):
                return None
            stride, block = old[i1 - 1][1], []
            for k in range(j1 - 1, j - 1, -1):
                block.append(stride)
                stride *= new[k]
            new_strides.extend(reversed(block))
            i, j = i1, j1
        it = iter(new_strides)
        strides = tuple(0 if d == 1 else next(it) for d in shape)
        return View(self.buf, shape, strides, self.offset)


def loop_vars(prefix: str, n: int) -> list[Var]:
    return [Var(f"{prefix}{k}", I64) for k in range(n)]
