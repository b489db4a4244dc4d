"""Accurate float sums on the CPU: `block_sums(program)` rewrites every reduction loop that adds
up floats into a tree of partial sums, so no partial adds more than a bounded number of terms.

A float sum accumulated in one pass over n terms drifts like n * eps (2^26 copies of 0.1 summed
in f32 came out 4% low). Here the terms are summed in leaf loops of at most `LEAF` terms, which
LLVM vectorizes into lanes of independent partial sums combined by a tree at the loop's end, and
every level above adds at most `FAN_IN` partials of the level below. The error is then bounded
by about (LEAF / lanes + log2(lanes) + FAN_IN * levels) * eps * sum|x|: a small multiple of
numpy's pairwise summation, at the leaf loop's vectorized speed (the levels above run once per
LEAF terms). Column sums (rows added into a vector of column accumulators, vectorized across
columns) get the same tree over their rows, with one scratch vector per level.

Max, argmax and integer sums are exact in any order and are left alone.

    reduce for r in [0, 100000):            for blk1 in [0, 6):
      acc = acc + x[r]                        let acc_p2 = 0.0
                                              for blk3 in [0, 16):
                                                reduce for blk4 in [0, 1024):
                                                  acc_p2 = acc_p2 + x[blk1*16384 + blk3*1024 + blk4]
                                              acc = acc + acc_p2
                                            ... (the tail: 1696 terms the same way)
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from ..ir.kernel import (
    Assign,
    Buffer,
    BufKind,
    Call,
    Const,
    Expr,
    KOp,
    Let,
    Load,
    Loop,
    LoopKernel,
    LoopKind,
    Program,
    ScanKernel,
    Stmt,
    Store,
    Var,
    children,
)
from .analysis import accesses
from .index import c64, iadd, imul
from .subst import substitute

#: Terms one leaf loop adds into its partial (LLVM splits them over 16-64 vector lanes).
LEAF = 256
#: Partials each level above the leaves adds up.
FAN_IN = 8
#: Rows one column partial adds up (column sums vectorize across columns: no lanes to share).
COLUMN_LEAF = 64


def block_sums(program: Program, rows: bool = True) -> Program:
    """`program` with every float-sum reduction loop turned into a tree of bounded partials
    (`rows=False`: column sums only, for a target that splits row sums its own way)."""
    kernels, scratch, changed = [], [], False
    for k in program.kernels:
        if isinstance(k, ScanKernel):
            body = block_sums(k.body, rows)
            changed |= body is not k.body
            k = dataclasses.replace(k, body=body)
        if isinstance(k, LoopKernel):
            blocker = _Blocker(k.name, {b.name: b for b in program.buffers}, rows)
            body = tuple(blocker.stmts(k.body))
            if blocker.changed:
                reads, writes, cost = accesses(body)
                k = dataclasses.replace(k, body=body, reads=reads, writes=writes, cost=cost)
                scratch += blocker.scratch
                changed = True
        kernels.append(k)
    if not changed:
        return program
    return dataclasses.replace(program, buffers=program.buffers + tuple(scratch),
                               kernels=tuple(kernels))


@dataclasses.dataclass
class _Acc:
    """How one kind of accumulator is declared, zeroed and folded into its parent."""

    fresh: Callable[[object, int], object]          # (target, level) -> new partial
    zero: Callable[[object], list[Stmt]]
    add_into: Callable[[object, object], list[Stmt]]  # (target, partial)
    # Whether a leaf keeps partials of its own (a vectorized scalar sum's lanes), so leaves
    # may add straight into their parent; a column leaf adds each row into its target.
    lanes: bool = True


class _Blocker:
    def __init__(self, kernel: str, buffers: dict[str, Buffer], rows: bool = True):
        self.kernel = kernel
        self.rows = rows
        self.buffers = buffers
        self.scratch: list[Buffer] = []
        self.changed = False
        self._n = 0

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_blk{self._n}"

    # -- statement walk -----------------------------------------------------------------------
    def stmts(self, stmts) -> list[Stmt]:
        out: list[Stmt] = []
        for s in stmts:
            if isinstance(s, Loop) and s.kind == LoopKind.REDUCE:
                accs = _float_sums(s) if self.rows else None
                if accs and _terms(s) > LEAF:
                    out += self.row_sum(s, accs)
                    continue
                column = _column_sum(s, self.buffers)
                if column is not None and s.extent > COLUMN_LEAF:
                    out += self.column_sum(s, *column)
                    continue
            if isinstance(s, Loop):
                s = dataclasses.replace(s, body=tuple(self.stmts(s.body)))
            out.append(s)
        return out

    # -- scalar accumulators (row reductions) -------------------------------------------------
    def row_sum(self, loop: Loop, accs: list[Var]) -> list[Stmt]:
        self.changed = True
        per_iter = _terms_of(loop.body)
        size = max(1, LEAF // per_iter)

        def leaf(offset: Expr, n: int, targets: list[Var]) -> list[Stmt]:
            rename = dict(zip(accs, targets))
            if n == 1:   # each iteration is a whole inner nest: block that in turn
                return self.stmts(_rename(substitute(loop.body, {Var(loop.var): offset}),
                                          rename))
            r = Var(self.fresh(loop.var))
            body = _rename(substitute(loop.body, {Var(loop.var): iadd(offset, r)}), rename)
            return [Loop(r.name, n, body, LoopKind.REDUCE)]

        scalar = _Acc(fresh=lambda t, lvl: Var(self.fresh(t.name), t.dtype),
                      zero=lambda p: [Let(p, Const(0.0, p.dtype))],
                      add_into=lambda t, p: [Assign(t, Call(KOp.ADD, (t, p), t.dtype))])
        return self.sum_into(accs, loop.extent, size, leaf, c64(0), scalar, loop.var)

    # -- buffer accumulators (column reductions) ----------------------------------------------
    def column_sum(self, loop: Loop, inner: Loop, acc: str, index: Expr) -> list[Stmt]:
        """`loop` adds each row into acc[index] (index over `inner`'s columns)."""
        self.changed = True
        buf = self.buffers[acc]

        def leaf(offset: Expr, n: int, targets: list[str]) -> list[Stmt]:
            body = _retarget(loop.body, acc, targets[0])
            r = Var(self.fresh(loop.var))
            if n == 1:
                return list(substitute(body, {Var(loop.var): offset}))
            return [Loop(r.name, n, substitute(body, {Var(loop.var): iadd(offset, r)}),
                         LoopKind.REDUCE)]

        def fresh(target: str, level: int) -> str:
            name = f"{acc}_p{level}"
            if name not in self.buffers:
                part = Buffer(name, buf.dtype, buf.size, BufKind.TEMP)
                self.buffers[name] = part
                self.scratch.append(part)
            return name

        def over_columns(stmt: Stmt) -> list[Stmt]:
            return [dataclasses.replace(inner, body=(stmt,))]

        column = _Acc(
            fresh=fresh,
            zero=lambda p: over_columns(Store(p, index, Const(0.0, buf.dtype))),
            add_into=lambda t, p: over_columns(Store(t, index, Call(
                KOp.ADD, (Load(t, index, buf.dtype), Load(p, index, buf.dtype)), buf.dtype))),
            lanes=False)
        return self.sum_into([acc], loop.extent, COLUMN_LEAF, leaf, c64(0), column, loop.var)

    # -- the tree ----------------------------------------------------------------------------
    def sum_into(self, targets: list, n: int, size: int, leaf, offset: Expr, acc: _Acc,
                 stem: str, level: int = 1) -> list[Stmt]:
        """Statements adding terms [offset, offset + n) into `targets`: leaves of at most `size`
        terms, and levels of at most FAN_IN partials above them."""
        if n <= size:
            return leaf(offset, n, targets)
        unit = size
        while unit * FAN_IN < n:
            unit *= FAN_IN

        def part(start: Expr, m: int) -> list[Stmt]:
            if unit == size and acc.lanes:    # at most FAN_IN leaves, straight into targets
                return leaf(start, m, targets)
            parts = [acc.fresh(t, level) for t in targets]
            stmts = [s for p in parts for s in acc.zero(p)]
            stmts += self.sum_into(parts, m, size, leaf, start, acc, stem, level + 1)
            return stmts + [s for t, p in zip(targets, parts) for s in acc.add_into(t, p)]

        full, rem = divmod(n, unit)
        q = Var(self.fresh(stem))
        body = part(iadd(offset, imul(q, c64(unit))), unit)
        out = [Loop(q.name, full, tuple(body))] if full > 1 else \
            list(substitute(tuple(body), {q: c64(0)}))
        if rem:
            out += part(iadd(offset, c64(full * unit)), rem)
        return out


# -- analysis -------------------------------------------------------------------------------------

def _float_sums(loop: Loop) -> list[Var] | None:
    """The accumulators of a reduction nest that only adds floats into them (acc = acc + e, e
    independent of every accumulator), or None."""
    accs: dict[str, Var] = {}
    terms: list[Expr] = []

    def walk(stmts) -> bool:
        for s in stmts:
            if isinstance(s, Loop):
                if not walk(s.body):
                    return False
            elif isinstance(s, Assign):
                v = s.value
                if not (s.var.dtype.is_float and isinstance(v, Call) and v.op == KOp.ADD
                        and v.args[0] == s.var):
                    return False
                accs[s.var.name] = s.var
                terms.append(v.args[1])
            elif isinstance(s, Store):
                return False
        return True

    if not walk(loop.body) or not accs:
        return None
    if any(_mentions(e, set(accs)) for e in terms):
        return None
    return list(accs.values())


def _mentions(e: Expr, names: set[str], seen=None) -> bool:
    seen = set() if seen is None else seen
    if id(e) in seen:
        return False
    seen.add(id(e))
    if isinstance(e, Var):
        return e.name in names
    return any(_mentions(c, names, seen) for c in children(e))


def _terms(loop: Loop) -> int:
    return loop.extent * _terms_of(loop.body)


def _terms_of(stmts) -> int:
    """Terms one pass of `stmts` adds into an accumulator."""
    return max([_terms(s) if isinstance(s, Loop) else 1 for s in stmts] or [1])


def _column_sum(loop: Loop, buffers: dict[str, Buffer]) -> tuple[Loop, str, Expr] | None:
    """(columns loop, accumulator buffer, its index) when `loop` runs over rows and its body is
    one loop over columns that first does acc[index] = acc[index] + e for a float buffer acc, at
    an index that does not depend on the row."""
    if len(loop.body) != 1 or not isinstance(loop.body[0], Loop):
        return None
    inner = loop.body[0]
    first = inner.body[0] if inner.body else None
    if not isinstance(first, Store) or not buffers[first.buf].dtype.is_float:
        return None
    v = first.value
    if not (isinstance(v, Call) and v.op == KOp.ADD and v.args[0] == Load(first.buf, first.index,
                                                                          v.dtype)):
        return None
    if _mentions(first.index, {loop.var}) or _loads(v.args[1], first.buf):
        return None
    if any(isinstance(s, Store) and s.buf == first.buf for s in inner.body[1:]):
        return None
    return inner, first.buf, first.index


def _loads(e: Expr, buf: str) -> bool:
    if isinstance(e, Load) and e.buf == buf:
        return True
    return any(_loads(c, buf) for c in children(e))


# -- rewriting -------------------------------------------------------------------------------------

def _rename(stmts, env: dict[Var, Var]) -> tuple[Stmt, ...]:
    """Statements with accumulators renamed (their uses and their Assigns)."""
    out: list[Stmt] = []
    for s in substitute(tuple(stmts), env):
        if isinstance(s, Assign):
            s = Assign(env.get(s.var, s.var), s.value)
        elif isinstance(s, Loop):
            s = dataclasses.replace(s, body=_rename(s.body, env))
        out.append(s)
    return tuple(out)


def _retarget(stmts, old: str, new: str) -> tuple[Stmt, ...]:
    """Statements with buffer `old` read and written as `new`."""
    if old == new:
        return tuple(stmts)
    memo: dict[int, Expr] = {}
    keep: list[Expr] = []      # keeps the memo's ids valid

    def expr(e: Expr) -> Expr:
        got = memo.get(id(e))
        if got is None:
            if isinstance(e, Load):
                got = Load(new if e.buf == old else e.buf, expr(e.index), e.dtype)
            elif isinstance(e, Call):
                got = Call(e.op, tuple(expr(a) for a in e.args), e.dtype, e.salt)
            else:
                got = e
            memo[id(e)] = got
            keep.append(e)
        return got

    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Loop):
            out.append(dataclasses.replace(s, body=_retarget(s.body, old, new)))
        elif isinstance(s, Store):
            out.append(Store(new if s.buf == old else s.buf, expr(s.index), expr(s.value)))
        else:
            out.append(dataclasses.replace(s, value=expr(s.value)))
    return tuple(out)


__all__ = ["COLUMN_LEAF", "FAN_IN", "LEAF", "block_sums"]
