"""Index-set splitting: a serial loop whose body tests its own index against constants runs as
one loop per range on which every such test has one outcome, each body folded for its range.

A pad, a concatenation or the VJP of slices (an LSTM's four gate gradients summed into one
[B, 4H] cotangent) reads as `where(0 <= i - 768 < 256, f(x[i - 768]), 0.0) + ...` per element:
every element evaluates every operand's branch, with clamped loads, and keeps one. Split at
i = 256, 512, 768, each of the four loops computes only its own operand, with plain loads.

Only tests of the form `a * i + b  <op>  0` (i the loop's variable, nothing else varying) cut
the loop; anything else the new ranges decide is folded too (see subst.substitute). Parallel
loops are left whole: each piece would be a fork and join of its own.
"""
from __future__ import annotations

import dataclasses

from ..ir.kernel import (
    COMPARE,
    Call,
    Expr,
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
from .analysis import accesses, affine, expressions
from .index import I64, c64, iadd
from .subst import substitute

#: At most this many loops replace one: past it, the code grows more than the selects cost.
MAX_PIECES = 8


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
        cuts = _cuts(body, s.var, s.extent) if s.kind == LoopKind.SERIAL else []
        if not cuts or len(cuts) + 1 > MAX_PIECES:
            out.append(dataclasses.replace(s, body=body))
            continue
        v = Var(s.var)
        for lo, hi in zip([0] + cuts, cuts + [s.extent]):
            piece = substitute(body, {v: iadd(v, c64(lo))}, {**extents, s.var: hi - lo})
            out.append(Loop(s.var, hi - lo, piece, s.kind))
    return tuple(out)


def _cuts(body: tuple[Stmt, ...], var: str, extent: int) -> list[int]:
    """The indices in (0, extent) at which some test of `var` against constants changes."""
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
            cut = _change_point(e, var, extent)
            if cut is not None:
                cuts.add(cut)
        stack.extend(children(e))
    return sorted(cuts)


def _change_point(test: Call, var: str, extent: int) -> int | None:
    """The first i in (0, extent) where `test` (a * i + b <op> 0, a linear test of `var` alone)
    differs from its value at i = 0, or None."""
    a_terms, b_terms = affine(test.args[0]), affine(test.args[1])
    if a_terms is None or b_terms is None:
        return None
    terms = dict(a_terms)
    for key, k in b_terms.items():
        terms[key] = terms.get(key, 0) - k
    coef = terms.pop(var, 0)
    const = terms.pop(1, 0)
    if coef == 0 or any(terms.values()):
        return None
    holds = {KOp.LT: lambda x: x < 0, KOp.LE: lambda x: x <= 0, KOp.GT: lambda x: x > 0,
             KOp.GE: lambda x: x >= 0}[test.op]
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


__all__ = ["MAX_PIECES", "split_loop_ranges"]
