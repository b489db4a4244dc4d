"""Operand inlining (implicit GEMM): a GEMM operand materialized by a loop kernel that only this
GEMM reads (conv2d's im2col columns, a relayout) need not be materialized at all; the GEMM can
compute each element it loads from the producer's expression instead. Backend-neutral:

- `inlinable_producers(program)`: which producer kernels can be recomputed inside which GEMM;
- `inline_operands(program)`: the Program with those producers dropped and each GEMM's
  `inlined` operands recorded (`InlinedOperand`: the element expression over the producer's
  loop variables), in scan bodies too;
- `operand_element(op, flat)`: the statements and expression of element `flat` of an inlined
  operand, for a renderer's operand loads.

    >>> print(inline_operands(program))      # the im2col kernel is gone; the GEMM shows
    ...     inlined cols0[ravel(i0 < 27, i1 < 42)] = where(..., x[...], 0.0)
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..ir.kernel import (
    BufKind,
    Expr,
    GemmKernel,
    InlinedOperand,
    Let,
    Loop,
    LoopKernel,
    Program,
    ScanKernel,
    Store,
    Var,
)
from . import index as ix
from .analysis import affine, deps, facts, may_overlap, perfect_nest


@dataclass
class Inlined:
    """Producer kernel indices to drop, and for each GEMM index its inlined operands."""

    skip: set = field(default_factory=set)
    by_gemm: dict = field(default_factory=dict)       # gemm index -> {buf: (loops, store)}

    def for_gemm(self, i: int) -> dict:
        return self.by_gemm.get(i, {})


def producer_nest(k: LoopKernel) -> tuple[list[Loop], Store] | None:
    """(loops, store) when `k` is one perfect nest storing element-by-element in row-major order
    of its loops: then element f of the buffer is the store's value at unravel(f)."""
    if len(k.body) != 1 or not isinstance(k.body[0], Loop):
        return None
    loops, body = perfect_nest(k.body[0])
    if len(body) != 1 or not isinstance(body[0], Store):
        return None
    st = body[0]
    want, stride = {}, 1
    for lp in reversed(loops):
        want[lp.var] = stride
        stride *= lp.extent
    got = {v: c for v, c in (affine(st.index) or {1: -1}).items() if c}
    if got != want or ("b", st.buf) in deps(st.value, {}):
        return None
    return loops, st


def inlinable_producers(p: Program) -> Inlined:
    """Operands of each GEMM whose producing loop kernel can run inside the GEMM's loads: a
    TEMP written by one earlier `producer_nest` kernel covering it, read by this GEMM alone,
    with nothing in between writing memory the producer reads."""
    out = Inlined()
    bufs = {b.name: b for b in p.buffers}
    ks = p.kernels
    for gi, g in enumerate(ks):
        if not isinstance(g, GemmKernel):
            continue
        for name in dict.fromkeys((g.a.buf, g.b.buf)):
            if bufs[name].kind != BufKind.TEMP:
                continue
            writers = [i for i, k in enumerate(ks) if name in k.writes]
            readers = [i for i, k in enumerate(ks) if name in k.reads]
            if len(writers) != 1 or readers != [gi] or writers[0] >= gi:
                continue
            pi = writers[0]
            prod = ks[pi]
            nest = producer_nest(prod) if isinstance(prod, LoopKernel) else None
            if nest is None or pi in out.skip:
                continue
            total = 1
            for lp in nest[0]:
                total *= lp.extent
            loads = facts((nest[1],)).reads
            if total != bufs[name].size or any(
                    may_overlap(bufs, w, x) for j in range(pi + 1, gi + 1)
                    for w in ks[j].writes for x in loads):
                continue
            out.skip.add(pi)
            out.by_gemm.setdefault(gi, {})[name] = nest
    return out


def inline_operands(p: Program) -> Program:
    """`p` with every inlinable producer dropped and recorded on its GEMM (whose `reads` then
    name what the producer loaded); scan bodies likewise."""
    found = inlinable_producers(p)
    kernels = []
    for i, k in enumerate(p.kernels):
        if i in found.skip:
            continue
        if isinstance(k, ScanKernel):
            k = replace(k, body=inline_operands(k.body))
        elif i in found.by_gemm:
            nests = found.for_gemm(i)
            ops = tuple(InlinedOperand(buf, tuple((lp.var, lp.extent) for lp in loops), st.value)
                        for buf, (loops, st) in nests.items())
            reads = [r for b in k.reads for r in (facts((nests[b][1],)).reads if b in nests
                                                  else (b,))]
            k = replace(k, inlined=ops, reads=tuple(dict.fromkeys(reads)))
        kernels.append(k)
    return replace(p, kernels=tuple(kernels))


def operand_element(op: InlinedOperand, flat: Expr) -> tuple[tuple[Let, ...], Expr]:
    """(lets binding the producer's loop variables to the coordinates of `flat`, the element's
    expression): element `flat` of the operand buffer, computed instead of loaded."""
    coords = ix.unravel(flat, [n for _, n in op.loops])
    return tuple(Let(Var(v), c) for (v, _), c in zip(op.loops, coords)), op.value


__all__ = ["Inlined", "inline_operands", "inlinable_producers", "operand_element",
           "producer_nest"]
