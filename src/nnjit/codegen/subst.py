"""Substitution of variables in kernel-IR expressions and statements (with re-folding of the
index arithmetic, so `i * 4 + 0` becomes `0` when i := 0)."""
from __future__ import annotations

from typing import Mapping

from ..ir.kernel import (
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
from . import index as ix

_FOLD = {KOp.ADD: ix.iadd, KOp.MUL: ix.imul, KOp.SUB: ix.isub, KOp.MIN: ix.imin,
         KOp.MAX: ix.imax}


def substitute_expr(e: Expr, env: Mapping[Var, Expr]) -> Expr:
    if isinstance(e, Var):
        return env.get(e, e)
    if isinstance(e, Const):
        return e
    if isinstance(e, Load):
        return Load(e.buf, substitute_expr(e.index, env), e.dtype)
    args = tuple(substitute_expr(a, env) for a in e.args)
    if e.dtype == ix.I64 and e.op in _FOLD and all(a.dtype == ix.I64 for a in args):
        return _FOLD[e.op](*args)
    if e.op == KOp.DIV and e.dtype == ix.I64 and ix.is_const(args[1]):
        return ix.idiv(args[0], args[1].value)
    if e.op == KOp.MOD and e.dtype == ix.I64 and ix.is_const(args[1]):
        return ix.imod(args[0], args[1].value)
    return Call(e.op, args, e.dtype, e.salt)


def substitute(stmts: tuple[Stmt, ...], env: Mapping[Var, Expr]) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Loop):
            out.append(Loop(s.var, s.extent, substitute(s.body, env), s.kind))
        elif isinstance(s, (Store, AtomicAdd)):
            out.append(type(s)(s.buf, substitute_expr(s.index, env),
                               substitute_expr(s.value, env)))
        elif isinstance(s, If):
            out.append(If(substitute_expr(s.cond, env), substitute(s.body, env)))
        elif isinstance(s, (Let, Assign)):
            out.append(type(s)(s.var, substitute_expr(s.value, env)))
        else:
            out.append(s)           # Barrier, BlockReduce: no expressions
    return tuple(out)
