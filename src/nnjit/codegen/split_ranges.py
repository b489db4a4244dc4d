"""Index-set splitting: a serial loop whose body tests its own index against constants runs as
one loop per range on which every such test has one outcome, each body folded for its range.

A pad, a concatenation or the VJP of slices (an LSTM's four gate gradients summed into one
[B, 4H] cotangent) reads as `where(0 <= i - 768 < 256, f(x[i - 768]), 0.0) + ...` per element:
every element evaluates every operand's branch, with clamped loads, and keeps one. Split at
i = 256, 512, 768, each of the four loops computes only its own operand, with plain loads.

Tests of the form `a * i + b  <op>  0` cut the loop, `i` its variable and `b` anything the
enclosing and inner loops bound: a constant `b` changes the test at one index; a bounded one
(an im2col's `ho + kh - pad >= 0`, kh an outer loop's) at two, the indices where the test
starts to depend on `b` and where it stops. The loop between is left with the test, the rest
without (the padding's border and interior). Anything else the new ranges decide is folded
too (see subst.substitute). Parallel loops are left whole: each piece would be a fork and join
of its own.
"""
from __future__ import annotations

import dataclasses

from ..ir.kernel import (
    COMPARE,
    Call,
    Expr,
    If,
    KOp,
    Load,
    Loop,
    LoopKind,
    LoopKernel,
    Program,
    ScanKernel,
    Stmt,
    Var,
    children,
)
from .analysis import accesses, affine_terms, deps, expressions, interval, loops_in
from .index import I64, c64, iadd
from .index import isub as ix_sub
from .subst import substitute

#: At most this many loops replace one: past it, the code grows more than the selects cost.
MAX_PIECES = 8
#: Nor may a loop nest grow past this many times its statements (pieces of pieces multiply).
MAX_GROWTH = 16
#: Loops shorter than this are not cut by bounded offsets: their tests stay in the middle band,
#: so a pooling window's taps would only multiply the code around a few selects.
MIN_BOUNDED_EXTENT = 8


def split_loop_ranges(program: Program) -> Program:
    """`program` with every serial loop that tests its index against constants split into the
    ranges on which those tests are constant (scan bodies included)."""
    kernels, changed = [], False
    for k in program.kernels:
        if isinstance(k, ScanKernel):
            body = split_loop_ranges(k.body)
            if body is not k.body:
                k, changed = dataclasses.replace(k, body=body), True
        elif isinstance(k, LoopKernel):
            body = _stmts(k.body, {})
            if body != k.body:
                reads, writes, cost = accesses(body)
                k = dataclasses.replace(k, body=body, reads=reads, writes=writes, cost=cost)
                changed = True
        kernels.append(k)
    return dataclasses.replace(program, kernels=tuple(kernels)) if changed else program


def _stmts(stmts: tuple[Stmt, ...], extents: dict[str, int]) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for s in stmts:
        if not isinstance(s, Loop):
            out.append(s)       # nested bodies of other statements hold no loops to split
            continue
        inner = {**extents, s.var: s.extent}
        body = _stmts(s.body, inner)
        cuts = _cuts(body, s.var, s.extent, {**_inner_extents(body), **inner}) \
            if s.kind == LoopKind.SERIAL else []
        if not cuts or len(cuts) + 1 > MAX_PIECES or \
                (len(cuts) + 1) * _size(body) > MAX_GROWTH * _size(s.body):
            out.append(dataclasses.replace(s, body=body))
            continue
        v = Var(s.var)
        for lo, hi in zip([0] + cuts, cuts + [s.extent]):
            piece = substitute(body, {v: iadd(v, c64(lo))}, {**extents, s.var: hi - lo})
            out.append(Loop(s.var, hi - lo, piece, s.kind))
    return tuple(out)


def _inner_extents(body: tuple[Stmt, ...]) -> dict[str, int]:
    """The loops inside `body` by variable, each its largest extent (split pieces reuse their
    loop's name with smaller ones): over-wide ranges only cut more conservatively."""
    ext: dict[str, int] = {}
    for loop in loops_in(body):
        ext[loop.var] = max(ext.get(loop.var, 0), loop.extent)
    return ext


def _cuts(body: tuple[Stmt, ...], var: str, extent: int, ranges: dict[str, int]) -> list[int]:
    """The indices in (0, extent) at which some test of `var` changes for some or for every
    value of its offset over `ranges`."""
    cuts: set[int] = set()
    seen: set[int] = set()
    stack: list[Expr] = list(expressions(body))
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, Load):
            stack.append(e.index)
            continue
        if not isinstance(e, Call):
            continue
        if e.op in COMPARE and e.op not in (KOp.EQ, KOp.NE) and \
                all(a.dtype == I64 for a in e.args):
            cuts.update(_change_points(e, var, extent, ranges))
        stack.extend(children(e))
    return sorted(cuts)


def _change_points(test: Call, var: str, extent: int, ranges: dict[str, int]) -> set[int]:
    """For `test` = (a * i + b <op> 0) with b over [lo, hi]: the first i in (0, extent) where
    the test differs from its value at i = 0, for b = lo and for b = hi (between the two, the
    outcome depends on b; outside them every b agrees)."""
    diff = ix_sub(test.args[0], test.args[1])
    terms = affine_terms(diff)
    if terms is None or not terms.get(var):
        return set()
    memo: dict = {}
    if any(("v", var) in deps(key, memo) for key in terms if not isinstance(key, (str, int))):
        return set()            # not linear in i
    lo, hi = interval(diff, {**ranges, var: 1})       # b: the test with i = 0
    if _INF in (abs(lo), abs(hi)) or (lo != hi and extent < MIN_BOUNDED_EXTENT):
        return set()
    coef = terms[var]
    return {c for b in {lo, hi} if (c := _change_point(test.op, coef, int(b), extent)) is not None}


def _change_point(op: KOp, coef: int, const: int, extent: int) -> int | None:
    """The first i in (0, extent) where coef * i + const <op> 0 differs from its value at i = 0,
    or None."""
    holds = {KOp.LT: lambda x: x < 0, KOp.LE: lambda x: x <= 0, KOp.GT: lambda x: x > 0,
             KOp.GE: lambda x: x >= 0}[op]
    first = holds(const)
    if holds(coef * (extent - 1) + const) == first:
        return None             # monotone in i: the same outcome at both ends is the same throughout
    lo, hi = 0, extent - 1      # holds(lo) == first != holds(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if holds(coef * mid + const) == first:
            lo = mid
        else:
            hi = mid
    return hi


_INF = float("inf")


def _size(stmts: tuple[Stmt, ...]) -> int:
    """Statements, nested ones counted."""
    return sum(1 + _size(s.body) if isinstance(s, (Loop, If)) else 1 for s in stmts)


__all__ = ["MAX_PIECES", "split_loop_ranges"]
