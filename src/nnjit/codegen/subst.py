"""Substitution of variables in kernel-IR expressions and statements (with re-folding of the
index arithmetic, so `i * 4 + 0` becomes `0` when i := 0).

Given the loop extents in scope, substitution also folds what the ranges decide: a comparison
of indices whose outcome is the same over every iteration, a min/max of indices whose order is,
and the `where` such a comparison selects with (`where(0 <= i - 768 < 256, x, 0.0)` is `x` for
i in [768, 1024) and `0.0` elsewhere)."""
from __future__ import annotations

from typing import Mapping

from ..ir.kernel import (
    COMPARE,
    Assign,
    AtomicAdd,
    Call,
    Const,
    Expr,
    If,
    KOp,
    Let,
    Load,
    Loop,
    Stmt,
    Store,
    Var,
)
from ..ir import DType
from . import index as ix
from .analysis import interval

_FOLD = {KOp.ADD: ix.iadd, KOp.MUL: ix.imul, KOp.SUB: ix.isub, KOp.MIN: ix.imin,
         KOp.MAX: ix.imax}


def substitute_expr(e: Expr, env: Mapping[Var, Expr],
                    extents: Mapping[str, int] | None = None) -> Expr:
    """`e` with `env` substituted; with `extents` (loop variable -> extent, each over
    [0, extent)), also folded where those ranges decide a comparison or a min/max."""
    if isinstance(e, Var):
        return env.get(e, e)
    if isinstance(e, Const):
        return e
    if isinstance(e, Load):
        return Load(e.buf, substitute_expr(e.index, env, extents), e.dtype)
    args = tuple(substitute_expr(a, env, extents) for a in e.args)
    if extents is not None:
        decided = _decided(e.op, args, extents)
        if decided is not None:
            return decided
    if e.dtype == ix.I64 and e.op in _FOLD and all(a.dtype == ix.I64 for a in args):
        return _FOLD[e.op](*args)
    if e.op == KOp.DIV and e.dtype == ix.I64 and ix.is_const(args[1]):
        return ix.idiv(args[0], args[1].value)
    if e.op == KOp.MOD and e.dtype == ix.I64 and ix.is_const(args[1]):
        return ix.imod(args[0], args[1].value)
    return Call(e.op, args, e.dtype, e.salt)


def _decided(op: KOp, args: tuple[Expr, ...], extents: Mapping[str, int]) -> Expr | None:
    """What `op(*args)` is over the whole of `extents`, if the ranges decide it."""
    if op == KOp.WHERE and ix.is_const(args[0]):
        return args[1] if args[0].value else args[2]
    if op in (KOp.AND, KOp.OR) and any(ix.is_const(a) for a in args):
        absorbing = op == KOp.OR
        if any(ix.is_const(a, absorbing) for a in args):
            return Const(absorbing, DType.BOOL)
        rest = [a for a in args if not ix.is_const(a)]
        return rest[0] if rest else Const(not absorbing, DType.BOOL)
    if op == KOp.NOT and ix.is_const(args[0]):
        return Const(not args[0].value, DType.BOOL)
    if len(args) != 2 or not all(a.dtype == ix.I64 for a in args):
        return None
    if op in (KOp.MIN, KOp.MAX):
        (alo, ahi), (blo, bhi) = (interval(a, extents) for a in args)
        if ahi <= blo:
            return args[0] if op == KOp.MIN else args[1]
        if bhi <= alo:
            return args[1] if op == KOp.MIN else args[0]
        return None
    if op not in COMPARE:
        return None
    lo, hi = interval(ix.isub(*args), extents)      # the range of a - b
    always, never = {KOp.LT: (hi < 0, lo >= 0), KOp.LE: (hi <= 0, lo > 0),
                     KOp.GT: (lo > 0, hi <= 0), KOp.GE: (lo >= 0, hi < 0),
                     KOp.EQ: (lo == hi == 0, lo > 0 or hi < 0),
                     KOp.NE: (lo > 0 or hi < 0, lo == hi == 0)}[op]
    if always or never:
        return Const(bool(always), DType.BOOL)
    return None


def substitute(stmts: tuple[Stmt, ...], env: Mapping[Var, Expr],
               extents: Mapping[str, int] | None = None) -> tuple[Stmt, ...]:
    """`stmts` with `env` substituted (and folded for `extents`, extended by each loop's own
    variable inside it; see substitute_expr)."""
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Loop):
            inner = None if extents is None else {**extents, s.var: s.extent}
            out.append(Loop(s.var, s.extent, substitute(s.body, env, inner), s.kind))
        elif isinstance(s, (Store, AtomicAdd)):
            out.append(type(s)(s.buf, substitute_expr(s.index, env, extents),
                               substitute_expr(s.value, env, extents)))
        elif isinstance(s, If):
            cond = substitute_expr(s.cond, env, extents)
            if extents is not None and ix.is_const(cond):
                out.extend(substitute(s.body, env, extents) if cond.value else ())
            else:
                out.append(If(cond, substitute(s.body, env, extents)))
        elif isinstance(s, (Let, Assign)):
            out.append(type(s)(s.var, substitute_expr(s.value, env, extents)))
        else:
            out.append(s)           # Barrier, BlockReduce: no expressions
    return tuple(out)
