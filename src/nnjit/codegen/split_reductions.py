"""Parallel full reductions on the CPU: `split_full_reductions(program)` gives a kernel that
reduces a large domain to one value (a loss's mean, `x.sum()` of a fused chain, an index check
over many labels) a parallel first pass over equal chunks.

The CPU backend runs a kernel on several threads only when its body is one parallel loop, and a
reduction to a scalar has none: its whole domain ran on one thread. Here

    let acc = 0.0                          kernel k_partials:
    reduce for r in [0, 1000000):            parallel for c in [0, 61):
      acc = acc + f(r)                          let acc = 0.0
    out[0] = g(acc)                             reduce for j in [0, 16393):
                                                  acc = acc + f(c * 16393 + j)
                                                part[c] = acc
                                           kernel k:
                                             let acc = 0.0
                                             reduce for c in [0, 61): acc = acc + part[c]
                                             reduce for t in [0, 27): acc = acc + f(999973 + t)
                                             out[0] = g(acc)

The chunks are fixed by the domain alone, never by the thread count, so the result is the same
bits on one thread or many. Each chunk's loop is still blocked by `block_sums` afterwards, so
the accuracy bound of `accumulate` holds chunk by chunk. Only a kernel's leading reduction is
split: later stages (softmax's sum after its max) see the combined value as before.
"""
from __future__ import annotations

import dataclasses

from ..ir.kernel import (
    Assign,
    Buffer,
    BufKind,
    Call,
    Const,
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
)
from .analysis import accesses
from .index import c64, iadd, imul
from .subst import substitute

#: Below this many terms one thread is faster than a fork and a combine.
MIN_TERMS = 1 << 16
#: Terms per chunk at least (a chunk's partial is one store; its loop should dwarf it).
MIN_CHUNK = 1 << 14
#: Chunks at most: enough to balance any thread count this backend uses, few to combine.
MAX_CHUNKS = 64

#: Combines that give the same value in any grouping of the terms up to rounding (sum) or
#: exactly (min, max, integer sums). Argmax carries an index beside its value: not split.
_COMBINES = (KOp.ADD, KOp.MAX, KOp.MIN)


def split_full_reductions(program: Program) -> Program:
    """`program` with every kernel that starts with a large reduction to one value preceded
    by a kernel computing its chunks' partials in parallel."""
    kernels: list = []
    scratch: list[Buffer] = []
    for k in program.kernels:
        if isinstance(k, ScanKernel):
            body = split_full_reductions(k.body)
            k = k if body is k.body else dataclasses.replace(k, body=body)
        elif isinstance(k, LoopKernel):
            split = _split(k, f"{k.name}_part")
            if split is not None:
                partials, k, part = split
                kernels.append(partials)
                scratch.append(part)
        kernels.append(k)
    if not scratch and all(a is b for a, b in zip(kernels, program.kernels)):
        return program
    return dataclasses.replace(program, buffers=program.buffers + tuple(scratch),
                               kernels=tuple(kernels))


def _leading_reduction(k: LoopKernel) -> tuple[Var, Const, Loop, KOp] | None:
    """(accumulator, its initial value, the reduce loop, the combine) when `k` begins with
    `let acc = init; reduce for r: ...; acc = op(acc, term)` and no other statement of the
    loop touches acc."""
    if len(k.body) < 2 or not isinstance(k.body[0], Let) or not isinstance(k.body[1], Loop):
        return None
    (let, loop) = k.body[:2]
    if not isinstance(let.value, Const) or loop.kind != LoopKind.REDUCE or not loop.body:
        return None
    acc, last = let.var, loop.body[-1]
    if not (isinstance(last, Assign) and last.var == acc and isinstance(last.value, Call)
            and last.value.op in _COMBINES and len(last.value.args) == 2
            and last.value.args[0] == acc):
        return None
    if any(_mentions(s, acc) for s in loop.body[:-1]) or _mentions_expr(last.value.args[1], acc):
        return None
    return acc, let.value, loop, last.value.op


def _split(k: LoopKernel, name: str) -> tuple[LoopKernel, LoopKernel, Buffer] | None:
    found = _leading_reduction(k)
    if found is None:
        return None
    acc, init, loop, op = found
    chunks = min(MAX_CHUNKS, loop.extent // MIN_CHUNK)
    if loop.extent < MIN_TERMS or chunks < 2:
        return None
    size = loop.extent // chunks
    tail = loop.extent - chunks * size
    r, c, j, t = Var(loop.var), Var(f"{loop.var}_chunk"), f"{loop.var}_in", f"{loop.var}_tail"
    part = Buffer(name, acc.dtype, chunks, BufKind.TEMP)

    def terms(var: str, extent: int, start) -> Loop:
        return Loop(var, extent, substitute(loop.body, {r: iadd(start, Var(var))}),
                    LoopKind.REDUCE)

    chunk_body = (Let(acc, init), terms(j, size, imul(c, c64(size))),
                  Store(part.name, c, acc))
    partials = _kernel(k, name, (Loop(c.name, chunks, chunk_body, LoopKind.PARALLEL),))
    combine: list[Stmt] = [Let(acc, init),
                           Loop(c.name, chunks, (Assign(acc, Call(op, (acc, Load(
                               part.name, c, acc.dtype)), acc.dtype)),), LoopKind.REDUCE)]
    if tail:
        combine.append(terms(t, tail, c64(chunks * size)))
    rest = _kernel(k, k.name, tuple(combine) + k.body[2:])
    return partials, rest, part


def _kernel(k: LoopKernel, name: str, body: tuple[Stmt, ...]) -> LoopKernel:
    reads, writes, cost = accesses(body)
    return dataclasses.replace(k, name=name, body=body, reads=reads, writes=writes, cost=cost)


def _mentions_expr(e, v: Var) -> bool:
    if isinstance(e, Var):
        return e == v
    if isinstance(e, Load):
        return _mentions_expr(e.index, v)
    return any(_mentions_expr(a, v) for a in getattr(e, "args", ()))


def _mentions(s: Stmt, v: Var) -> bool:
    if isinstance(s, Loop):
        return any(_mentions(b, v) for b in s.body)
    if isinstance(s, (Let, Assign)):
        return s.var == v or _mentions_expr(s.value, v)
    if isinstance(s, Store):
        return _mentions_expr(s.index, v) or _mentions_expr(s.value, v)
    # If, AtomicAdd and the GPU forms: treated as touching it, so such a loop is left alone.
    return True
