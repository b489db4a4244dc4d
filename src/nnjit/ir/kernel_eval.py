"""A direct (slow, scalar) interpreter of the kernel IR: the executable meaning of a Program.

It runs the statements one iteration at a time in Python, so it is only for small tests: it
checks the lowering against the graph reference independently of any native backend, and it
spells out each KOp's semantics in numpy terms that renderers must match.

GPU form (`GpuKernel`) runs as a launch of one block of one thread, which is valid for every
mapped kernel (its result does not depend on the geometry): GRID / BLOCKS / THREADS loops run
all their iterations, a barrier and a block reduction over one thread do nothing, atomic adds
are plain adds. So it checks what the mapping computes, not its thread safety (the CUDA
simulator runs the real threads).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .errors import CompileError, IndexOutOfRange
from .kernel import (
    STATUS_BUFFER,
    Assign,
    AtomicAdd,
    BufKind,
    Const,
    CopyKernel,
    HostKernel,
    GemmKernel,
    GpuKernel,
    If,
    KOp,
    Let,
    Load,
    Loop,
    LoopKernel,
    Program,
    ScanKernel,
    Store,
    Var,
)
from .philox import uniform_at
from .types import DType


def _cast(v, dt: DType):
    if dt == DType.BOOL:
        return bool(v)
    if dt.is_float:
        return dt.np.type(v)
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return dt.np.type(0)
        info = np.iinfo(dt.np)
        t = math.trunc(float(v)) if math.isfinite(v) else (info.max if v > 0 else info.min)
        return dt.np.type(min(max(t, info.min), info.max))
    return dt.np.type(int(v))


def _nan_max(a, b):
    """numpy maximum: NaN propagates, and a tie (+0.0 vs -0.0) gives the second operand."""
    return a if (a != a or a > b) and not (b != b) else b


def _nan_min(a, b):
    return a if (a != a or a < b) and not (b != b) else b


_OPS = {
    KOp.ADD: lambda a, b: a + b, KOp.SUB: lambda a, b: a - b, KOp.MUL: lambda a, b: a * b,
    KOp.NEG: lambda a: -a, KOp.ABS: lambda a: abs(a), KOp.EXP: np.exp, KOp.LOG: np.log,
    KOp.SQRT: np.sqrt, KOp.TANH: np.tanh,
    KOp.SIGMOID: lambda a: np.exp(-np.logaddexp(0, -a)),
    KOp.RELU: lambda a: a if a != a or a > 0 else type(a)(0),   # np.maximum(a, 0)
    KOp.POW: np.power, KOp.MOD: np.remainder, KOp.MAX: _nan_max, KOp.MIN: _nan_min,
    KOp.LT: lambda a, b: a < b, KOp.LE: lambda a, b: a <= b, KOp.GT: lambda a, b: a > b,
    KOp.GE: lambda a, b: a >= b, KOp.EQ: lambda a, b: a == b, KOp.NE: lambda a, b: a != b,
    KOp.AND: lambda a, b: bool(a) and bool(b), KOp.OR: lambda a, b: bool(a) or bool(b),
    KOp.NOT: lambda a: not a, KOp.ISNAN: lambda a: a != a,
    KOp.WHERE: lambda c, a, b: a if c else b,
    # -- math functions (issue 12) --
    KOp.SIN: np.sin, KOp.COS: np.cos, KOp.EXPM1: np.expm1, KOp.LOG1P: np.log1p,
    KOp.ERF: lambda a: math.erf(float(a)), KOp.FLOOR: np.floor, KOp.CEIL: np.ceil,
    KOp.ROUND: np.rint,
}


class _Machine:
    def __init__(self, mem: dict[str, np.ndarray]):
        self.mem = mem

    def expr(self, e, env):
        if isinstance(e, Const):
            return _cast(e.value, e.dtype)
        if isinstance(e, Var):
            return env[e.name]
        if isinstance(e, Load):
            i = int(self.expr(e.index, env))
            buf = self.mem[e.buf]
            if not 0 <= i < buf.size:
                raise IndexError(f"load {e.buf}[{i}] out of bounds (size {buf.size})")
            return buf[i]
        args = [self.expr(a, env) for a in e.args]
        if e.op == KOp.CAST:
            return _cast(args[0], e.dtype)
        if e.op == KOp.RAND:
            return uniform_at(int(args[0]), np.array([int(args[1])]), e.salt, e.dtype.np)[0]
        if e.op in (KOp.DIV, KOp.MOD) and not e.dtype.is_float:
            a, b = int(args[0]), int(args[1])
            if b == 0:              # numpy: x // 0 == x % 0 == 0
                return e.dtype.np.type(0)
            return _cast(np.int64(a // b if e.op == KOp.DIV else a % b), e.dtype)
        if e.op == KOp.DIV:
            with np.errstate(all="ignore"):
                return e.dtype.np.type(args[0] / args[1]) if args[1] != 0 else e.dtype.np.type(
                    np.divide(args[0], args[1]))
        with np.errstate(all="ignore"):
            out = _OPS[e.op](*args)
        return _cast(out, e.dtype)

    def run(self, stmts, env):
        for s in stmts:
            if isinstance(s, Loop):
                for i in range(s.extent):
                    self.scope(s.body, env, {s.var: np.int64(i)})
            elif isinstance(s, If):
                if self.expr(s.cond, env):
                    self.scope(s.body, env, {})
            elif isinstance(s, (Store, AtomicAdd)):
                i = int(self.expr(s.index, env))
                buf = self.mem[s.buf]
                if not 0 <= i < buf.size:
                    raise IndexError(f"store {s.buf}[{i}] out of bounds (size {buf.size})")
                value = self.expr(s.value, env)
                buf[i] = buf[i] + value if isinstance(s, AtomicAdd) else value
            elif isinstance(s, (Let, Assign)):
                env[s.var.name] = self.expr(s.value, env)
            # Barrier, BlockReduce: nothing to do for one thread

    def scope(self, body, env, bound):
        inner = {**env, **bound}
        self.run(body, inner)
        for k in env:            # accumulators assigned inside
            env[k] = inner[k]


def run_program(p: Program, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Execute `p` on input arrays; returns fresh output arrays. Raises IndexOutOfRange when a
    run-time index check fails."""
    mem: dict[str, np.ndarray] = {STATUS_BUFFER: np.zeros(2, np.int64)}
    arena = np.zeros(max(p.arena_bytes, 1), np.uint8)
    for b in p.buffers:
        if b.kind == BufKind.INPUT:
            mem[b.name] = np.ascontiguousarray(args[b.index]).reshape(-1).astype(b.dtype.np)
        elif b.kind == BufKind.OUTPUT:
            mem[b.name] = np.zeros(b.size, b.dtype.np)
        elif b.kind == BufKind.CONST:
            mem[b.name] = np.array(b.value, b.dtype.np).reshape(-1)
        elif b.kind == BufKind.TEMP:
            mem[b.name] = arena[b.offset: b.offset + b.nbytes].view(b.dtype.np)
    for b in p.buffers:
        if b.kind == BufKind.ALIAS:
            base = mem[b.base]
            mem[b.name] = base[b.offset: b.offset + b.size]
    _execute(p, mem)
    site, value = (int(v) for v in mem[STATUS_BUFFER])
    if site:
        raise IndexOutOfRange(p.sites[site - 1].message(value))
    return [mem[name].copy() for name in p.outputs]


def _execute(p: Program, mem: dict[str, np.ndarray]) -> None:
    m = _Machine(mem)
    for k in p.kernels:
        if isinstance(k, LoopKernel):
            m.run(k.body, {})
        elif isinstance(k, CopyKernel):
            mem[k.dst_buf][:k.size] = mem[k.src_buf][:k.size]
        elif isinstance(k, GemmKernel):
            _gemm(k, mem, m)
        elif isinstance(k, ScanKernel):
            _scan(k, mem)
        elif isinstance(k, HostKernel):
            raise CompileError(f"kernel {k.name}: host step {k.op} (a collective over "
                               f"{k.attr('group_size')} processes) runs in a backend's runtime, "
                               "not in the kernel-IR interpreter")
        elif isinstance(k, GpuKernel):
            if k.gemm is not None:
                _gemm(k.gemm, mem, m)
            else:
                m.run(k.body, {})


def _gemm(k: GemmKernel, mem, m: _Machine) -> None:
    if k.inlined:       # materialize the inlined operands in scratch (the GEMM's view of them)
        mem = dict(mem)
        for op in k.inlined:
            out = np.zeros(mem[op.buf].size, mem[op.buf].dtype)
            for f, idx in enumerate(np.ndindex(*[n for _, n in op.loops])):
                out[f] = m.expr(op.value, {v: np.int64(i) for (v, _), i in zip(op.loops, idx)})
            mem[op.buf] = out
        m = _Machine(mem)
    def mat(v, b_index):
        base = v.offset + sum(i * s for i, s in zip(b_index, v.batch_strides))
        return base

    # Pre-packed constant operands (the same for every batch), unpacked once.
    a_packed = None if k.a_packed is None else \
        k.a_packed.unpack(mem[k.a.buf], k.k, k.m).T.astype(np.float64)
    b_packed = None if k.b_packed is None else \
        k.b_packed.unpack(mem[k.b.buf], k.k, k.n).astype(np.float64)
    for bi, b_index in enumerate(np.ndindex(*k.batch) if k.batch else [()]):
        a = a_packed if a_packed is not None else np.array(
            [[mem[k.a.buf][mat(k.a, b_index) + r * k.a.row_stride + c * k.a.col_stride]
              for c in range(k.k)] for r in range(k.m)], np.float64).reshape(k.m, k.k)
        b = b_packed if b_packed is not None else np.array(
            [[mem[k.b.buf][mat(k.b, b_index) + r * k.b.row_stride + c * k.b.col_stride]
              for c in range(k.n)] for r in range(k.k)], np.float64).reshape(k.k, k.n)
        c0 = mat(k.c, b_index)
        cbuf = mem[k.c.buf]
        prod = a @ b
        last = not k.accumulate_batches or bi == int(np.prod(k.batch)) - 1
        for r in range(k.m):
            for c in range(k.n):
                i = c0 + r * k.c.row_stride + c * k.c.col_stride
                val = prod[r, c] + (cbuf[i] if k.accumulate_batches and bi > 0 else 0.0)
                cbuf[i] = val
                if k.epilogue and last:
                    env = {"acc": cbuf[i], "row": np.int64(r), "col": np.int64(c)}
                    env.update({f"b{j}": np.int64(x) for j, x in enumerate(b_index)})
                    m.run(k.epilogue, env)


def _scan(k: ScanKernel, mem) -> None:
    body = k.body
    for src, dst in zip(k.init_bufs, k.carry_bufs):
        mem[dst][:] = mem[src][:mem[dst].size]
    cur, nxt = list(k.carry_bufs), list(k.next_bufs)
    steps = range(k.length - 1, -1, -1) if k.reverse else range(k.length)
    arena = mem[k.arena_buf]
    for t in steps:
        sub: dict[str, np.ndarray] = {}
        ins = ([mem[c] for c in cur] + [_slice(mem[x], k.length, t) for x in k.xs_bufs]
               + [mem[c] for c in k.const_bufs])
        outs = [mem[c] for c in nxt] + [_slice(mem[y], k.length, t) for y in k.ys_bufs]
        for b in body.buffers:
            if b.kind == BufKind.INPUT:
                sub[b.name] = ins[b.index].view(b.dtype.np)[:b.size]
            elif b.kind == BufKind.OUTPUT:
                sub[b.name] = outs[b.index].view(b.dtype.np)[:b.size]
            elif b.kind == BufKind.CONST:
                sub[b.name] = np.array(b.value, b.dtype.np).reshape(-1)
            elif b.kind == BufKind.TEMP:
                sub[b.name] = arena.view(np.uint8)[b.offset: b.offset + b.nbytes].view(b.dtype.np)
            elif b.kind == BufKind.STATUS:
                sub[b.name] = mem[STATUS_BUFFER]
        for b in body.buffers:
            if b.kind == BufKind.ALIAS:
                sub[b.name] = sub[b.base][b.offset: b.offset + b.size]
        _execute(body, sub)
        cur, nxt = nxt, cur
    for src, dst in zip(cur, k.final_bufs):
        mem[dst][:] = mem[src][:mem[dst].size]


def _slice(buf: np.ndarray, length: int, t: int) -> np.ndarray:
    n = buf.size // max(length, 1)
    return buf[t * n:(t + 1) * n]
