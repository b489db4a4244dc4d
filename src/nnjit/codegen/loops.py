"""Lowering a group of elementwise, movement and reduction nodes to one `LoopKernel`.

Every value in the group is computed where it is used ("compute inline"): `value_at(v, coords)`
returns the scalar expression for element `coords` of `v`, turning movement ops into coordinate
arithmetic and elementwise ops into scalar calls, down to loads of materialized buffers. A
group with reductions becomes a row kernel: a parallel loop over the kept dims and, inside it,
one reduce loop per reduction (in dependence order: softmax is max, then sum, then the map).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..ir import CompileError, DType, Node, Op, Value
from ..ir.kernel import (
    Accumulation,
    Assign,
    Buffer,
    Call,
    Const,
    Expr,
    KOp,
    Let,
    Load,
    Loop,
    LoopKernel,
    LoopKind,
    Stmt,
    Store,
    Var,
    identity,
)
from ..ir.opdef import kind_of, opdef, set_rule
from ..ir.ops import Kind
from .analysis import accesses
from .index import (
    I64,
    View,
    c64,
    clamp,
    cmp,
    iadd,
    imul,
    in_range,
    isub,
    land,
    loop_vars,
    ravel,
    reshape_coords,
    select,
    unravel,
)
from .subst import substitute


class GroupLowering:
    """Scalar expressions for the values of one group of nodes.

    `views` maps every value the group reads from memory to a strided view of its buffer.
    Values produced by `nodes` are recomputed wherever they are used (the fusion pass only
    groups nodes where that duplicates no expensive work)."""

    def __init__(self, nodes: Sequence[Node], views: dict[Value, View], name: str,
                 overrides: dict[Value, Expr] | None = None):
        self.nodes = list(nodes)
        self.members = set(self.nodes)
        self.views = views
        self.name = name
        self.accs: dict[Node, Var] = {}
        # Values whose scalar is already at hand (a GEMM's accumulator, a window's reduction):
        # value_at returns it whatever the coordinates.
        self.overrides = dict(overrides or {})
        self._memo: dict[tuple, Expr] = {}

    # -- expressions --------------------------------------------------------------------------
    def value_at(self, v: Value, coords: Sequence[Expr]) -> Expr:
        key = (v, tuple(coords))
        e = self._memo.get(key)
        if e is None:
            e = self._compute(v, list(coords))
            self._memo[key] = e
        return e

    def _compute(self, v: Value, c: list[Expr]) -> Expr:
        t = v.type
        if v in self.overrides:
            return self.overrides[v]
        if v in self.views:
            return self.views[v].load(c, t.dtype)
        n = v.node
        if n.op == Op.CONST and n.type.size == 1:
            return Const(n.attrs["value"].reshape(-1)[0].item(), t.dtype)
        if n not in self.members:
            raise CompileError(f"{self.name}: value of {n.op.value} at {n.loc} is neither in "
                               f"the group nor materialized")
        if n.op == Op.CONST:
            raise CompileError(f"{self.name}: array constant was not materialized")
        d = opdef(n.op)
        if d.scalar is not None:
            args = tuple(self.value_at(s, _broadcast(c, t.shape, s.shape)) for s in n.srcs)
            return d.scalar(args, t.dtype, n.attrs)
        if d.kind == Kind.REDUCE:
            return self.accs[n]
        if d.lower is not None and d.kind in (Kind.ELEMENTWISE, Kind.VIEW, Kind.INJECTIVE):
            return d.lower(self, n, c)
        raise CompileError(f"{self.name}: {n.op.value} cannot be computed inside a loop kernel "
                           f"(at {n.loc})")

    # -- kernels ------------------------------------------------------------------------------
    def map_loops(self, shape: tuple[int, ...], stores: list[tuple[Value, View]],
                  prefix: str = "i") -> list[Stmt]:
        """A parallel loop nest over `shape` storing each root into its view."""
        if self._flat_ok(shape, stores):
            size = int(np.prod(shape, dtype=np.int64))
            (i,) = loop_vars(prefix, 1)
            body = tuple(store_all([Store(dst.buf, iadd(c64(dst.offset), i),
                                          self._flat_at(v, i, size)) for v, dst in stores]))
            return [Loop(i.name, size, body, LoopKind.PARALLEL)] if size != 1 else list(
                _subst_zero(body, i))
        vs = loop_vars(prefix, len(shape))
        body = store_all([Store(dst.buf, dst.index(vs), self.value_at(v, vs))
                          for v, dst in stores])
        return _nest(vs, shape, body, parallel=True)

    def _cone(self, values) -> list[Node]:
        """The members the stored `values` are computed from (read-in values excluded)."""
        out, stack = {}, [v for v in values if v not in self.views]
        while stack:
            n = stack.pop().node
            if n in out or n not in self.members:
                continue
            out[n] = None
            stack.extend(s for s in n.srcs if s not in self.views)
        return list(out)

    def _flat_ok(self, shape, stores) -> bool:
        """True when every value the stores compute is an elementwise function of same-shaped
        or single-element operands, so the nest can be one loop over the linear index."""
        size = int(np.prod(shape, dtype=np.int64))
        for n in self._cone([v for v, _ in stores]):
            if opdef(n.op).scalar is None and n.op != Op.CONST:
                return False
            if n.op == Op.CONST and n.type.size != 1:
                return False
            for s in n.srcs:
                if s.type.size not in (1, size) or (s.type.size == size and s.shape != shape):
                    return False
                if s in self.views and not _is_contiguous(self.views[s], s.shape):
                    return False
        # A stored value read straight from memory (a copy) must be contiguous too.
        return all(_is_contiguous(dst, shape) and (v not in self.views or
                                                   _is_contiguous(self.views[v], v.shape))
                   for v, dst in stores)

    def _flat_at(self, v: Value, i: Var, size: int) -> Expr:
        if v in self.views:
            view = self.views[v]
            idx = iadd(c64(view.offset), i) if v.type.size == size else c64(view.offset)
            return _load(view.buf, idx, v.type.dtype)
        n = v.node
        if n.op == Op.CONST:
            return Const(n.attrs["value"].reshape(-1)[0].item(), v.type.dtype)
        args = tuple(self._flat_at(s, i, size) for s in n.srcs)
        return opdef(n.op).scalar(args, v.type.dtype, n.attrs)

    def reduce_kernel(self, roots: list[tuple[Value, View]]) -> list[Stmt]:
        """Row kernel: parallel over the kept dims; per row, each reduction's loop, then the
        full-shaped roots' stores."""
        reds = [n for n in self.nodes if kind_of(n.op) == Kind.REDUCE]
        shape, axes = _reduce_domain(reds[0])
        for r in reds[1:]:
            if _reduce_domain(r) != (shape, axes):
                raise CompileError(f"{self.name}: reductions over different domains "
                                   f"({reds[0].op.value} {_reduce_domain(reds[0])} vs "
                                   f"{r.op.value} {_reduce_domain(r)}) cannot share a kernel")
        kept = [d for d in range(len(shape)) if d not in axes]
        outer = loop_vars("i", len(kept))
        # Adjacent reduced axes run as one loop (h and w of a bias gradient: 784 contiguous
        # elements, not 28 loops of 28 with a tail and a horizontal sum each); the index
        # arithmetic folds the unravelled coordinates back into the flat offset.
        runs = _runs(axes)
        extents = [int(np.prod([shape[d] for d in run], dtype=np.int64)) for run in runs]

        def full(inner: list[Var]) -> list[Expr]:
            c: list[Expr] = [c64(0)] * len(shape)
            for d, v in zip(kept, outer):
                c[d] = v
            for run, v in zip(runs, inner):
                for d, x in zip(run, _unravel_flat(v, [shape[d] for d in run])):
                    c[d] = x
            return c

        # Full-shaped results that do not depend on a reduction (the masked gradient a bias
        # sum reads) are written first by one flat elementwise pass; the reductions then read
        # them back instead of computing them again in short per-row loops.
        pre: list[Stmt] = []
        ahead = [(v, dst) for v, dst in roots if v.shape == shape
                 and not any(_depends_on(v.node, r, self.members) for r in reds)]
        if ahead and tuple(axes) != tuple(range(len(shape) - len(axes), len(shape))):
            pre = self.map_loops(shape, ahead, prefix="p")
            for v, dst in ahead:
                self.views[v] = dst
            self._memo.clear()
            roots = [(v, dst) for v, dst in roots if (v, dst) not in ahead]
        body: list[Stmt] = []
        for k, r in enumerate(reds):
            inner = loop_vars(f"r{k}_", len(runs))
            body += self._reduce_stage(r, k, full(inner), inner, extents)
        row_stores, full_stores = [], []
        for v, dst in roots:
            if v.shape == shape:
                full_stores.append((v, dst))
            else:
                row_stores.append((v, dst))
        if full_stores:
            inner = loop_vars("j", len(runs))
            c = full(inner)
            stmts = store_all([Store(dst.buf, dst.index(c), self.value_at(v, c))
                               for v, dst in full_stores])
            body += _nest(inner, extents, stmts)
        rows = []
        for v, dst in row_stores:
            c = _row_coords(v.shape, shape, kept, outer)
            rows.append(Store(dst.buf, dst.index(c), self.value_at(v, c)))
        body += store_all(rows)
        return pre + _nest(outer, [shape[d] for d in kept], body, parallel=True)

    def column_reduction(self, roots: list[tuple[Value, View]]) -> tuple[int, int] | None:
        """(rows, columns) when this group is one sum/max over leading axes whose results are
        all row-shaped (a bias gradient: sum over the batch). Such a kernel runs best
        row by row, adding each row into a vector of column accumulators."""
        reds = [n for n in self.nodes if kind_of(n.op) == Kind.REDUCE]
        if len(reds) != 1 or opdef(reds[0].op).lower.index:
            return None
        shape, axes = _reduce_domain(reds[0])
        if not axes or tuple(axes) != tuple(range(len(axes))) or len(axes) == len(shape):
            return None
        # Full-shaped results (the masked gradient a bias sum reads) are stored row by row
        # alongside the accumulation, so they must not depend on the finished sum.
        if any(v.shape == shape and _depends_on(v.node, reds[0], self.members)
               for v, _ in roots):
            return None
        rows = int(np.prod([shape[d] for d in axes], dtype=np.int64))
        cols = int(np.prod(shape[len(axes):], dtype=np.int64))
        return (rows, cols) if cols >= 8 else None

    def column_kernel(self, roots: list[tuple[Value, View]], acc: View) -> list[Stmt]:
        """Column accumulation into `acc` (a scratch vector of the kept shape): zero it, add
        every row (unit-stride, vectorizable), then compute the results from it. Parallel over
        chunks of columns, which never share an accumulator."""
        (red,) = [n for n in self.nodes if kind_of(n.op) == Kind.REDUCE]
        shape, axes = _reduce_domain(red)
        kept_shape = shape[len(axes):]
        rows, cols = self.column_reduction(roots)
        chunk = next((c for c in (256, 128, 64) if cols % c == 0 and cols // c >= 2), cols)
        ch, j, r = Var("ch"), Var("j"), Var("r")
        col = iadd(imul(ch, c64(chunk)), j)
        dt = red.type.dtype
        full = (_unravel_flat(r, [shape[d] for d in axes])
                + _unravel_flat(col, kept_shape))
        x = self.value_at(red.srcs[0], full)
        cur = Load(acc.buf, col, dt)
        how: Accumulation = opdef(red.op).lower
        combine = Call(how.op, (cur, x), dt)
        init = Const(identity(how.op, dt), dt)
        self.overrides[red.out] = cur
        kept_coords = _unravel_flat(col, kept_shape)
        stores, full_stores = [], []
        for v, dst in roots:
            if v.shape == shape:
                full_stores.append(Store(dst.buf, dst.index(full), self.value_at(v, full)))
                continue
            c = kept_coords if len(v.shape) == len(kept_shape) else [c64(0)] * len(axes) + \
                list(kept_coords)
            c = [x if d != 1 else c64(0) for x, d in zip(c, v.shape)]
            stores.append(Store(dst.buf, dst.index(c), self.value_at(v, c)))
        row = (Store(acc.buf, col, combine),) + tuple(store_all(full_stores))
        body = [Loop(j.name, chunk, (Store(acc.buf, col, init),)),
                Loop(r.name, rows, (Loop(j.name, chunk, row),), LoopKind.REDUCE),
                Loop(j.name, chunk, tuple(store_all(stores)))]
        return [Loop(ch.name, cols // chunk, tuple(body), LoopKind.PARALLEL)]

    def _reduce_stage(self, r: Node, k: int, coords, inner, extents) -> list[Stmt]:
        x = r.srcs[0]
        dt = x.type.dtype
        how: Accumulation = opdef(r.op).lower
        acc = Var(f"acc{k}", dt if how.index else r.type.dtype)
        init = Let(acc, Const(identity(how.op, dt), dt))
        val = self.value_at(x, coords)
        if not how.index:
            self.accs[r] = acc
            return [init] + _nest(inner, extents, [Assign(acc, Call(how.op, (acc, val), dt))],
                                  kind=LoopKind.REDUCE)
        best_i = Var(f"acc{k}_i", I64)
        t = Var(f"take{k}", DType.BOOL)
        self.accs[r] = best_i
        loop_body = [Let(t, argmax_take(val, acc)), Assign(acc, select(t, val, acc)),
                     Assign(best_i, select(t, inner[0], best_i))]
        return [init, Let(best_i, c64(0))] + _nest(inner, extents, loop_body, kind=LoopKind.SERIAL)


def argmax_take(val: Expr, best: Expr) -> Expr:
    """Whether a later term `val` replaces the best so far in an argmax (numpy's rule: the
    first maximum; a NaN counts as larger than everything, so the first NaN wins). The GPU
    mapping recognizes argmax loops by this exact expression (`codegen.gpu`)."""
    take = Call(KOp.GT, (val, best), DType.BOOL)
    if val.dtype.is_float:
        first_nan = Call(KOp.AND, (Call(KOp.ISNAN, (val,), DType.BOOL),
                                   Call(KOp.NOT, (Call(KOp.ISNAN, (best,), DType.BOOL),),
                                        DType.BOOL)), DType.BOOL)
        take = Call(KOp.OR, (take, first_nan), DType.BOOL)
    return take


# -- coordinate rules: the element of each source, view and injective op at given coordinates ----

def _iota_at(g: GroupLowering, n: Node, c: list[Expr]) -> Expr:
    axis = c[n.attrs["axis"]]
    return Call(KOp.CAST, (axis,), n.type.dtype) if n.type.dtype != I64 else axis


def _random_at(g: GroupLowering, n: Node, c: list[Expr]) -> Expr:
    seed = g.value_at(n.srcs[0], [])
    return Call(KOp.RAND, (seed, ravel(c, n.type.shape)), n.type.dtype, n.attrs["salt"])


def _broadcast_at(g: GroupLowering, n: Node, c: list[Expr]) -> Expr:
    return g.value_at(n.srcs[0], _broadcast(c, n.type.shape, n.srcs[0].shape))


def _transpose_at(g: GroupLowering, n: Node, c: list[Expr]) -> Expr:
    src: list = [None] * len(c)
    for k, p in enumerate(n.attrs["perm"]):
        src[p] = c[k]
    return g.value_at(n.srcs[0], src)


def _slice_at(g: GroupLowering, n: Node, c: list[Expr]) -> Expr:
    return g.value_at(n.srcs[0], [iadd(c64(st), imul(x, c64(sp))) for x, st, sp in
                                  zip(c, n.attrs["starts"], n.attrs["steps"])])


def _reshape_at(g: GroupLowering, n: Node, c: list[Expr]) -> Expr:
    return g.value_at(n.srcs[0], reshape_coords(c, n.type.shape, n.srcs[0].shape))


def _pad_at(g: GroupLowering, n: Node, c: list[Expr]) -> Expr:
    src = n.srcs[0]
    valid: Expr = Const(True, DType.BOOL)
    inner = []
    for x, (lo, _), d in zip(c, n.attrs["pads"], src.shape):
        y = isub(x, c64(lo))
        valid = land(valid, in_range(y, 0, d))
        inner.append(clamp(y, 0, max(d - 1, 0)))
    fill = Const(n.attrs["value"] if n.type.dtype.is_float else int(n.attrs["value"]),
                 n.type.dtype)
    return select(valid, g.value_at(src, inner), fill)

def _concat_at(g: GroupLowering, n: Node, c: list[Expr]) -> Expr:
    ax = n.attrs["axis"]
    parts, start = [], 0
    for s in n.srcs:
        parts.append((start, s))
        start += s.shape[ax]
    out: Expr | None = None
    for start, s in reversed(parts):
        if s.shape[ax] == 0:
            continue
        sc = list(c)
        sc[ax] = clamp(isub(c[ax], c64(start)), 0, s.shape[ax] - 1)
        val = g.value_at(s, sc)
        end = start + s.shape[ax]
        out = val if out is None else select(cmp(KOp.LT, c[ax], c64(end)), val, out)
    if out is None:     # every operand is empty along the axis: no element is computed
        dt = n.type.dtype
        return Const(0.0 if dt.is_float else False if dt == DType.BOOL else 0, dt)
    return out

def _take_at(g: GroupLowering, n: Node, c: list[Expr]) -> Expr:
    x, ind = n.srcs
    ax = n.attrs["axis"]
    k = ind.type.ndim
    i = g.value_at(ind, c[ax:ax + k])
    if ind.type.dtype != I64:
        i = Call(KOp.CAST, (i,), I64)
    size = x.shape[ax]
    i = select(cmp(KOp.LT, i, c64(0)), iadd(i, c64(size)), i)
    i = clamp(i, 0, max(size - 1, 0))
    return g.value_at(x, c[:ax] + [i] + c[ax + k:])



def make_loop_kernel(name: str, body, src: str, buffers: dict[str, Buffer]) -> LoopKernel:
    """A LoopKernel with its read/write sets and a work estimate filled in from the body."""
    reads, writes, cost = accesses(body)
    return LoopKernel(name, tuple(body), reads, writes, cost, src)


def store_all(stores: Sequence[Store]) -> list[Stmt]:
    """The stores of one iteration's results: every value first (as Lets), then the stores, so
    no store clobbers memory a later value still reads (a result written in place over an
    operand, or over a donated input)."""
    stores = list(stores)
    if len(stores) <= 1:
        return stores
    lets = [Let(Var(f"res{k}", s.value.dtype), s.value) for k, s in enumerate(stores)]
    return lets + [Store(s.buf, s.index, let.var) for s, let in zip(stores, lets)]


def zero_plane(dst: View, shape, vn: Var, vc: Var, dt: DType) -> list[Stmt]:
    """Loops storing 0 over image plane (vn, vc) of NCHW `dst` (`shape` its full shape)."""
    hh, ww = loop_vars("z", 2)
    return _nest([hh, ww], shape[2:], [Store(dst.buf, dst.index([vn, vc, hh, ww]),
                                             Const(0.0, dt))])


def accumulate(dst: View, coords, value, dt: DType) -> Store:
    """dst[coords] += value."""
    idx = dst.index(coords)
    return Store(dst.buf, idx, Call(KOp.ADD, (Load(dst.buf, idx, dt), value), dt))


def _runs(axes) -> list[list[int]]:
    """Sorted axes split into runs of consecutive axes: (0, 2, 3) -> [[0], [2, 3]]."""
    runs: list[list[int]] = []
    for a in axes:
        if runs and runs[-1][-1] == a - 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    return runs


def _depends_on(n: Node, target: Node, members: set[Node]) -> bool:
    """Whether `n` reads `target`'s result through nodes of `members`."""
    stack, seen = [n], set()
    while stack:
        m = stack.pop()
        if m is target:
            return True
        if m in seen or m not in members:
            continue
        seen.add(m)
        stack.extend(s.node for s in m.srcs)
    return False


def _unravel_flat(i: Expr, shape) -> list[Expr]:
    return unravel(i, shape) if len(shape) != 1 else [i]


def _reduce_domain(r: Node) -> tuple[tuple[int, ...], tuple[int, ...]]:
    axes = tuple(r.attrs["axes"]) if "axes" in r.attrs else (r.attrs["axis"],)
    return r.srcs[0].shape, tuple(axes)


def _row_coords(vshape, shape, kept, outer) -> list[Expr]:
    """Coordinates of a row-shaped value (keepdims or not, size-1 dims anywhere) for the
    current outer iteration: its non-unit dims are the kept dims' non-unit dims, in order."""
    live = [(v, shape[d]) for d, v in zip(kept, outer) if shape[d] != 1]
    want = [d for d in vshape if d != 1]
    if [e for _, e in live] != want:
        raise CompileError(f"value of shape {vshape} does not fit the row domain {shape}")
    it = iter(v for v, _ in live)
    return [next(it) if d != 1 else c64(0) for d in vshape]


def _broadcast(c: Sequence[Expr], out_shape, in_shape) -> list[Expr]:
    """Coordinates in an operand broadcast (numpy rules) to `out_shape`."""
    lead = len(out_shape) - len(in_shape)
    return [c64(0) if d == 1 else c[lead + k] for k, d in enumerate(in_shape)]


def _nest(vs: Sequence[Var], extents: Sequence[int], body: list[Stmt], parallel: bool = False,
          kind: LoopKind = LoopKind.SERIAL) -> list[Stmt]:
    """Loops over `extents` around `body` (innermost last); the outermost is parallel when
    asked. Extent-1 loops are dropped (their variable is 0)."""
    stmts = list(body)
    live = [(v, e) for v, e in zip(vs, extents)]
    for depth in range(len(live) - 1, -1, -1):
        v, e = live[depth]
        if e == 1:
            stmts = list(_subst_zero(tuple(stmts), v))
            continue
        outermost = all(x[1] == 1 for x in live[:depth])
        k = LoopKind.PARALLEL if parallel and outermost else kind
        stmts = [Loop(v.name, e, tuple(stmts), k)]
    return stmts


def _subst_zero(stmts: tuple[Stmt, ...], v: Var):
    """Statements with loop variable `v` replaced by 0 (for extent-1 loops)."""
    return substitute(stmts, {v: c64(0)})


def _load(buf: str, idx: Expr, dtype: DType):
    return Load(buf, idx, dtype)


def _is_contiguous(view: View, shape) -> bool:
    want = View.contiguous(view.buf, shape).strides
    return all(s == w for s, w, d in zip(view.strides, want, shape) if d != 1)


for _op, _rule in {Op.IOTA: _iota_at, Op.RANDOM_UNIFORM: _random_at, Op.BROADCAST_TO: _broadcast_at,
                  Op.TRANSPOSE: _transpose_at, Op.SLICE: _slice_at, Op.RESHAPE: _reshape_at,
                  Op.PAD: _pad_at, Op.CONCAT: _concat_at, Op.TAKE: _take_at}.items():
    set_rule(_op, lower=_rule)

__all__ = ["GroupLowering", "accumulate", "make_loop_kernel", "store_all", "zero_plane"]
