"""Run-time index checks: the kernel a `check_index` node becomes.

The indices pass through unchanged (the node's result aliases its operand); before their users
run, one small kernel scans them, finds the first index outside the valid range with a min
reduction (branch-free, so it vectorizes), and records its site number and value in the status
buffer unless an earlier check already failed. The gathers themselves keep their clamp, so no
index can make them read out of bounds; the runtime raises `IndexOutOfRange` after the call
(native code returns early once the status is set).
"""
from __future__ import annotations

from ..ir import DType
from ..ir.kernel import (
    STATUS_BUFFER,
    Assign,
    Call,
    IndexSite,
    KOp,
    Let,
    Load,
    Loop,
    LoopKind,
    Stmt,
    Store,
    Var,
)
from .index import I64, c64, clamp, cmp, select


def check_loops(buf: str, dtype: DType, size: int, site: IndexSite, number: int) -> list[Stmt]:
    """Statements checking the `size` indices in `buf` against `site` (number `number`)."""
    c, pos = Var("c"), Var("bad_at", I64)
    found = Var("found", DType.BOOL)

    def index(at) -> Call | Load:
        v = Load(buf, at, dtype)
        return v if dtype == I64 else Call(KOp.CAST, (v,), I64)

    v = index(c)
    bad = Call(KOp.OR, (cmp(KOp.LT, v, c64(site.lo)), cmp(KOp.GE, v, c64(site.size))),
               DType.BOOL)
    for ok in site.ignore:
        bad = Call(KOp.AND, (bad, cmp(KOp.NE, v, c64(ok))), DType.BOOL)
    first = Call(KOp.MIN, (pos, select(bad, c, c64(size))), I64)
    status = lambda k: Load(STATUS_BUFFER, c64(k), I64)  # noqa: E731
    return [
        Let(pos, c64(size)),
        Loop(c.name, size, (Assign(pos, first),), LoopKind.REDUCE),
        Let(found, Call(KOp.AND, (cmp(KOp.LT, pos, c64(size)),
                                  cmp(KOp.EQ, status(0), c64(0))), DType.BOOL)),
        Store(STATUS_BUFFER, c64(1), select(found, index(clamp(pos, 0, size - 1)), status(1))),
        Store(STATUS_BUFFER, c64(0), select(found, c64(number), status(0))),
    ]


__all__ = ["check_loops"]
