"""GPU mapping: `map_to_gpu(program, target)` rewrites every kernel into explicit GPU form, one
`GpuKernel` per launch, whose statements say which thread runs what; a GPU renderer then only
renders (see `backends/cuda/render.py`).

- A loop kernel is cut into segments, each launched alone: every top-level parallel loop, and
  each run of statements between them (they may share accumulators).
- A parallel loop, with the independent loops nested alone in it flattened into it, becomes a
  grid-stride loop: one thread per iteration, inner loops serial in that thread.
- Where rows are few but their reductions long (a full sum, softmax over long rows, a column
  sum), each row gets a block instead (`_Block`): its threads split the loops, reductions end
  in a shared-memory tree (`BlockReduce`), a store runs on thread 0 only, and barriers order
  the steps; a float sum's per-thread share is added up in cascaded partials for accuracy.
  An argmax splits the same way: each thread keeps the first best of its share, then a max
  tree and a min tree over positions give the first maximum (numpy's rule, NaN first).
- A serial nest of scatter-add stores (`b[i] = b[i] + v`) runs grid-wide with atomic adds.
- A GEMM gets its launch plan (tiled through shared memory, or one thread per element); a copy
  becomes a grid-stride loop; scan bodies are mapped in place. A scan whose body is small
  runs as one launch of one block that loops over the steps, its body's kernels mapped for
  that block and separated by barriers (`_scan`); a larger one is stepped from the host.

    >>> print(map_to_gpu(program, Target()))       # x.sum() over f32[300]
      kernel k0_sum(reads in0; writes out0) on grid (1,) x block (256,), shared 1024B:
        sh0: f32[256] shared @ smem+0
        block for row0 in [0, 1):
          let acc0: f32 = 0.0
          let p0: f32 = 0.0
          thread for r0_0 in [0, 300):
            p0 = (p0 + in0[r0_0])
          block_reduce add p0 via sh0
          acc0 = (acc0 + p0)
          thread for t0 in [0, 1):
            out0[0] = acc0
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

from ..ir import CompileError, DType
from ..ir.kernel import (
    Assign,
    AtomicAdd,
    Barrier,
    BlockReduce,
    Buffer,
    BufKind,
    Call,
    Const,
    CopyKernel,
    Expr,
    HostKernel,
    GemmKernel,
    GpuKernel,
    If,
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
    Tiles,
    Var,
    identity,
)
from . import index as ix
from .analysis import deps, facts, independent, perfect_nest
from .loops import argmax_take

#: A thread's share of a float sum is added up in CASCADE_LEVELS levels of CASCADE terms each
#: (a running sum over a long share drifts like n * eps: 2^20 terms per thread for a 2^28-term
#: row).
CASCADE = 32
CASCADE_LEVELS = 3


@dataclass(frozen=True)
class Target:
    """Launch geometry. Mapped kernels are correct for any of these values (tests vary them);
    they only trade parallelism against per-launch cost."""

    threads: int = 256          # threads per block of grid-stride kernels
    max_blocks: int = 4096      # grid size cap (grid-stride loops cover the rest)
    reduce_block: int = 256     # largest block of a block-per-row reduction (a power of two)
    reduce_min: int = 128       # a row reduction at least this long gets a block
    gemm_tiled_min: int = 1 << 18    # GEMMs with fewer multiply-adds use the simple kernel
    gemm_small: Tiles = Tiles(8, 8, 2, 2, 8)
    gemm_large: Tiles = Tiles(16, 16, 4, 4, 8)
    # A scan whose body does at most this much work a step (multiply-adds and statements)
    # runs its whole loop in one launch of one block of `threads` (0: always the host loop).
    scan_loop_work: int = 1 << 18
    # Every block-per-row kernel uses exactly `reduce_block` threads (kernels that share one
    # launch, as a looped scan's body does, share its block size).
    exact_block: bool = False


#: What the CUDA simulator runs: a few threads per launch, since each is a Python thread there
#: (a 1-thread launch costs ~0.3 ms, a 128-thread one ~15 ms). Still more than one thread and
#: one block, so every test exercises the grid-stride and block-sharing logic.
SIM_TARGET = Target(threads=2, max_blocks=2, reduce_block=4, reduce_min=128,
                    gemm_small=Tiles(2, 2, 2, 2, 4), gemm_large=Tiles(4, 4, 2, 2, 4))


def map_to_gpu(program: Program, target: Target = Target()) -> Program:
    """`program` with every kernel in GPU form (GpuKernels; ScanKernels over a mapped body,
    looped on the device or from the host). Kernel names become unique identifiers across the
    program tree."""
    return _map(program, target, set(), "")


def _map(p: Program, t: Target, names: set, prefix: str) -> Program:
    bufs = {b.name: b for b in p.buffers}
    out: list = []
    for k in p.kernels:
        if isinstance(k, LoopKernel):
            for j, seg in enumerate(_segments(k.body)):
                name = _unique(names, prefix + k.name + (f"_{j}" if j else ""))
                out += [g for g in [_segment(k, seg, name, t)] if g is not None]
        elif isinstance(k, GemmKernel):
            out += [g for g in [_gemm(k, _unique(names, prefix + k.name), t)] if g]
        elif isinstance(k, CopyKernel):
            out += [_copy(k, _unique(names, prefix + k.name), t, bufs)] if k.size else []
        elif isinstance(k, ScanKernel):
            out.append(_scan(k, t, names, prefix, bufs))
        elif isinstance(k, GpuKernel):
            out.append(replace(k, name=_unique(names, k.name)))
        elif isinstance(k, HostKernel):
            raise CompileError(f"{p.name}: {k.src or k.op}: collectives across processes run on "
                               "the llvm and interp backends (GPUs would need NCCL)")
        else:
            raise CompileError(f"{p.name}: cannot map kernel {k!r} to the GPU")
    return replace(p, kernels=tuple(out))


# -- scans ----------------------------------------------------------------------------------------
def _scan(k: ScanKernel, t: Target, names: set, prefix: str, outer: dict) -> ScanKernel:
    """A scan whose body is small enough runs its whole loop in one launch of one block (its
    kernels mapped for that block: no tiled GEMMs, blocks of exactly `t.threads`); any other
    keeps the host loop over a body mapped for `t`."""
    inner = f"{prefix}{k.name}__"
    if _loopable(k, t, outer):
        one = replace(t, max_blocks=1, reduce_block=t.threads, gemm_tiled_min=1 << 62,
                      exact_block=True)
        trial = set(names)
        name = _unique(trial, prefix + k.name)
        body = _map(k.body, one, trial, inner)
        if all(isinstance(g, GpuKernel) and g.tiles is None for g in body.kernels):
            names |= trial
            return replace(k, name=name, body=body, block=t.threads)
    return replace(k, body=_map(k.body, t, names, inner))


def _loopable(k: ScanKernel, t: Target, outer: dict) -> bool:
    """A scan that can loop on the device: at least one step, a body of loop, GEMM and copy
    kernels only, doing at most `t.scan_loop_work` a step, whose per-step buffers are the
    scan's own (same element type; views of them too)."""
    body = k.body
    if not (t.scan_loop_work and k.length >= 1 and t.threads & (t.threads - 1) == 0
            and all(isinstance(b, (LoopKernel, GemmKernel, CopyKernel)) for b in body.kernels)):
        return False
    if sum(_work(b) for b in body.kernels) > t.scan_loop_work:
        return False
    ins = list(k.carry_bufs) + list(k.xs_bufs) + list(k.const_bufs)
    outs = list(k.next_bufs) + list(k.ys_bufs)
    own = {b.name: b for b in body.buffers}
    for b in body.buffers:
        if b.kind in (BufKind.INPUT, BufKind.OUTPUT):
            names = ins if b.kind == BufKind.INPUT else outs
            if not 0 <= b.index < len(names) or outer[names[b.index]].dtype != b.dtype:
                return False
        elif b.kind == BufKind.ALIAS:
            root = b
            while root.kind == BufKind.ALIAS and root.base in own:
                root = own[root.base]
            if root.kind in (BufKind.INPUT, BufKind.OUTPUT) and root.dtype != b.dtype:
                return False
    return True


def _work(k) -> int:
    if isinstance(k, GemmKernel):
        return max(1, _prod(k.batch)) * k.m * k.n * k.k
    if isinstance(k, CopyKernel):
        return k.size
    return facts(k.body).cost


def _unique(used: set, name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", name)
    out, n = base, 1
    while out in used:
        out, n = f"{base}_{n}", n + 1
    used.add(out)
    return out


def _grid(t: Target, n: int) -> tuple[tuple[int], tuple[int]]:
    block = min(t.threads, max(1, n))
    return (min(t.max_blocks, -(-n // block)),), (block,)


class _Fresh:
    """New variable names that no name of the kernel uses."""

    def __init__(self, stmts):
        self.used = set(facts(stmts).declared)

    def __call__(self, base: str) -> str:
        n = 0
        while f"{base}{n}" in self.used:
            n += 1
        self.used.add(f"{base}{n}")
        return f"{base}{n}"


# -- loop kernels ---------------------------------------------------------------------------------
def _segments(body) -> list[tuple]:
    """Top-level statements split into launches: each parallel loop alone, the runs between
    them together (they may share accumulators)."""
    segs, run = [], []
    for s in body:
        if isinstance(s, Loop) and s.kind == LoopKind.PARALLEL:
            if run:
                segs.append(tuple(run))
                run = []
            segs.append((s,))
        else:
            run.append(s)
    if run:
        segs.append(tuple(run))
    return segs


def _segment(k: LoopKernel, seg: tuple, name: str, t: Target) -> GpuKernel | None:
    fresh = _Fresh(k.body)
    par = seg[0] if len(seg) == 1 and isinstance(seg[0], Loop) and \
        seg[0].kind == LoopKind.PARALLEL else None
    loops, body = _flatten(par) if par is not None else ([], seg)
    rows = _prod(lp.extent for lp in loops)
    if rows == 0:
        return None
    atomic = _atomic_nest(seg) if par is None else None
    blk = _block_plan(body)
    shared: tuple = ()
    if atomic is not None:
        loops, inner = atomic
        total = _prod(lp.extent for lp in loops)
        if total == 0:
            return None
        stmts = _split(LoopKind.GRID, loops, _atomics(inner), fresh)
        grid, block = _grid(t, total)
    elif blk is not None and (par is None or blk >= t.reduce_min
                              or rows < t.threads <= blk):
        nt = t.reduce_block if t.exact_block else min(t.reduce_block, _pow2(blk))
        b = _Block(nt, fresh)
        stmts = _split(LoopKind.BLOCKS, loops, b.row(body), fresh, "row")
        grid, block, shared = (min(t.max_blocks, rows),), (nt,), tuple(b.shared)
    else:
        stmts = _split(LoopKind.GRID, loops, body, fresh)
        grid, block = _grid(t, rows)
    f = facts(stmts)
    return GpuKernel(name, grid, block, stmts, f.reads, f.writes, shared, src=k.src)


def _split(kind: LoopKind, loops: Sequence[Loop], body, fresh, flat: str = "f") -> tuple:
    """One loop of `kind` over the flattened iterations of `loops` (row-major), binding each
    loop's variable to its coordinate; no loops: one iteration."""
    body = tuple(body)
    if len(loops) == 1:
        return (Loop(loops[0].var, loops[0].extent, body, kind),)
    v = fresh(flat)
    shape = [lp.extent for lp in loops]
    coords = ix.unravel(Var(v), shape)
    lets = tuple(Let(Var(lp.var), c) for lp, c in zip(loops, coords))
    return (Loop(v, _prod(shape), lets + body, kind),)


def _flatten(par: Loop) -> tuple[list[Loop], tuple]:
    """The parallel loop and the independent loops nested alone in it, and the body."""
    loops, body = [par], par.body
    while len(body) == 1 and isinstance(body[0], Loop) and independent(body[0]):
        loops.append(body[0])
        body = body[0].body
    return loops, body


def _atomics(inner) -> tuple:
    """The scatter-add stores of an `_atomic_nest` as atomic adds."""
    return tuple(AtomicAdd(s.buf, s.index, s.value.args[1]) if isinstance(s, Store) else s
                 for s in inner)


def _atomic_nest(seg) -> tuple[list[Loop], tuple] | None:
    """A serial nest whose only stores are `b[i] = b[i] + v` (v not reading b) becomes a
    grid-wide loop of atomic adds."""
    if len(seg) != 1 or not isinstance(seg[0], Loop):
        return None
    loops, inner = perfect_nest(seg[0])
    stored = set()
    for s in inner:
        if isinstance(s, Store):
            v = s.value
            if not (isinstance(v, Call) and v.op == KOp.ADD and isinstance(v.args[0], Load)
                    and v.args[0].buf == s.buf and v.args[0].index == s.index
                    and v.dtype in (DType.F32, DType.F64, DType.I32, DType.I64)):
                return None
            stored.add(s.buf)
        elif not isinstance(s, Let):
            return None
    if not stored:
        return None
    others = [s.index for s in inner if isinstance(s, Store)] + [
        s.value.args[1] if isinstance(s, Store) else s.value for s in inner]
    memo: dict = {}
    if any(deps(e, memo) & {("b", b) for b in stored} for e in others):
        return None
    return loops, inner


# -- one block per row ----------------------------------------------------------------------------
_TREE_OPS = {KOp.ADD, KOp.MUL, KOp.MAX, KOp.MIN}


def _tree_accs(inner) -> dict[str, Var] | None:
    """Accumulators of a tree-reducible innermost body, by name: only lets and
    `acc = acc (+|max|min) e` with e independent of the accumulators updated here."""
    accs: dict[str, Var] = {}
    for s in inner:
        if isinstance(s, Assign):
            v = s.value
            if (not isinstance(v, Call) or v.op not in _TREE_OPS or v.dtype == DType.BOOL
                    or s.var.name in accs or v.args[0] != s.var):
                return None
            accs[s.var.name] = s.var
        elif not isinstance(s, Let):
            return None
    if not accs:
        return None
    memo: dict = {}
    keys = {("v", a) for a in accs}
    for s in inner:
        e = s.value.args[1] if isinstance(s, Assign) else s.value
        if deps(e, memo) & keys or (isinstance(s, Let) and s.var.name in accs):
            return None
    return accs


def _arg_tree(nest, inner) -> tuple[Var, Var, Expr, Var] | None:
    """(best, its index, the term, the take flag) if `inner` is an argmax step over a single
    loop, as `codegen.loops` lowers it: lets, `let take = argmax_take(term, best)`,
    `best = where(take, term, best)`, `best_i = where(take, i, best_i)` with i the loop's
    variable and the term independent of the accumulators."""
    if len(nest) != 1 or len(inner) < 3:
        return None
    *lets, let_t, set_v, set_i = inner
    if not (all(isinstance(s, Let) for s in lets) and isinstance(let_t, Let)
            and isinstance(set_v, Assign) and isinstance(set_i, Assign)):
        return None
    t, best, best_i = let_t.var, set_v.var, set_i.var
    v, vi = set_v.value, set_i.value
    if not (isinstance(v, Call) and v.op == KOp.WHERE and v.args[0] == t and v.args[2] == best
            and isinstance(vi, Call) and vi.op == KOp.WHERE and vi.args[0] == t
            and vi.args[1] == Var(nest[0].var) and vi.args[2] == best_i
            and best_i.dtype == DType.I64 and best.name != best_i.name):
        return None
    term = v.args[1]
    if let_t.value != argmax_take(term, best):
        return None
    memo: dict = {}
    keys = {("v", best.name), ("v", best_i.name)}
    if any(deps(s.value, memo) & keys for s in lets) or deps(term, memo) & keys:
        return None
    return best, best_i, term, t


def _tree_op(inner, name: str) -> KOp:
    return next(s.value.op for s in inner if isinstance(s, Assign) and s.var.name == name)


def _classify(s) -> str | None:
    """How a row statement runs in a block: every thread ("let", "pure": identical values),
    thread 0 ("store"), split over the threads ("dist"), split then combined ("tree", and
    "argtree" for an argmax), or a serial loop whose body is such split loops ("serial": a
    column reduction's rows)."""
    if isinstance(s, (Let, Assign)):
        return "let"
    if isinstance(s, Store):
        return "store"
    if not isinstance(s, Loop):
        return None
    f = facts(s.body)
    if f.writes:
        if independent(s):
            return "dist"
        outer = set(f.assigned) - f.declared
        if not outer and s.body and all(isinstance(t, Loop) and _classify(t) in
                                        ("dist", "serial") for t in s.body):
            return "serial"
        return None
    nest, inner = perfect_nest(s)
    accs = _tree_accs(inner)
    if accs is not None and not (set(accs) & {lp.var for lp in nest}):
        return "tree"
    if _arg_tree(nest, inner) is not None:
        return "argtree"
    return "pure"


def _block_plan(body) -> int | None:
    """The longest shared loop if every statement of a row can run block-wide, else None."""
    longest = 0
    for s in body:
        kind = _classify(s)
        if kind is None:
            return None
        if kind in ("tree", "argtree"):
            longest = max(longest, _prod(lp.extent for lp in perfect_nest(s)[0]))
        elif kind == "dist":
            longest = max(longest, _prod(lp.extent for lp in _flatten(s)[0]))
        elif kind == "serial":
            longest = max(longest, _serial_width(s))
    return longest if longest else None


def _serial_width(s: Loop) -> int:
    """The widest split loop inside a "serial" loop."""
    return max(_prod(lp.extent for lp in _flatten(t)[0]) if _classify(t) == "dist"
               else _serial_width(t) for t in s.body)


class _Block:
    """The statements of one row, run by a block of `nt` threads (see `_classify`); collects
    the shared scratch its trees use (one slot of nt 8-byte elements each)."""

    def __init__(self, nt: int, fresh: _Fresh):
        self.nt, self.fresh = nt, fresh
        self.shared: list[Buffer] = []

    def row(self, body) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        sync = False
        for s in body:
            if sync:
                out.append(Barrier())
                sync = False
            kind = _classify(s)
            if kind in ("let", "pure"):
                out.append(s)
            elif kind == "store":
                out.append(Loop(self.fresh("t"), 1, (s,), LoopKind.THREADS))
                sync = True
            elif kind == "dist":
                out += _split(LoopKind.THREADS, *_flatten(s), self.fresh)
                sync = True
            elif kind == "serial":
                out.append(self.serial(s))
                sync = True
            elif kind == "argtree":
                out += self.arg_tree(s)
            else:
                out += self.tree(s)
        return tuple(out)

    def serial(self, s: Loop) -> Loop:
        """Steps in order (a column sum's rows, or its blocks of rows), each split over the
        threads, with a barrier after each."""
        body: list[Stmt] = []
        for t in s.body:
            if _classify(t) == "serial":
                body.append(self.serial(t))
            else:
                body += _split(LoopKind.THREADS, *_flatten(t), self.fresh) + (Barrier(),)
        return Loop(s.var, s.extent, tuple(body), LoopKind.SERIAL)

    def tree(self, s: Loop) -> list[Stmt]:
        """Per-thread partials over a strided share of the nest, then a tree per accumulator
        in shared memory, folded into the accumulator."""
        nest, inner = perfect_nest(s)
        accs = _tree_accs(inner)
        ops = {n: _tree_op(inner, n) for n in accs}
        partial = {n: Var(self.fresh("p"), v.dtype) for n, v in accs.items()}
        out: list[Stmt] = [Let(p, Const(identity(ops[n], p.dtype), p.dtype))
                           for n, p in partial.items()]
        share = -(-_prod(lp.extent for lp in nest) // self.nt)    # terms one thread adds up
        sums = [n for n, v in accs.items() if ops[n] == KOp.ADD and v.dtype.is_float]
        if share > CASCADE and sums:
            out += self.cascaded(nest, inner, partial, sums)
        else:
            out += _split(LoopKind.THREADS, nest, _rename(inner, partial), self.fresh)
        for n, acc in accs.items():
            out.append(BlockReduce(partial[n], ops[n], self.scratch(acc.dtype)))
            out.append(Assign(acc, Call(ops[n], (acc, partial[n]), acc.dtype)))
        return out

    def arg_tree(self, s: Loop) -> list[Stmt]:
        """An argmax split over the threads: each thread runs the step over its strided share
        (in increasing index order, so it keeps its share's first best), then a max tree gives
        the row's best value M to all, and a min tree over each thread's index where its best
        is M (the largest index elsewhere) the first position of M. A thread whose share is
        empty or all at the identity keeps index 0, which wins only where M is the identity,
        and then 0 is the answer."""
        nest, inner = perfect_nest(s)
        best, best_i, term, t = _arg_tree(nest, inner)
        dt = best.dtype
        p, p_i = Var(self.fresh("p"), dt), Var(self.fresh("p"), DType.I64)
        out: list[Stmt] = [Let(p, Const(identity(KOp.MAX, dt), dt)), Let(p_i, ix.c64(0))]
        step = tuple(inner[:-3]) + (
            Let(t, argmax_take(term, p)),
            Assign(p, ix.select(t, term, p)),
            Assign(p_i, ix.select(t, Var(nest[0].var), p_i)))
        out += _split(LoopKind.THREADS, nest, step, self.fresh)
        m, c = Var(self.fresh("m"), dt), Var(self.fresh("c"), DType.I64)
        same = Call(KOp.EQ, (p, m), DType.BOOL)
        if dt.is_float:
            both_nan = Call(KOp.AND, (Call(KOp.ISNAN, (p,), DType.BOOL),
                                      Call(KOp.ISNAN, (m,), DType.BOOL)), DType.BOOL)
            same = Call(KOp.OR, (same, both_nan), DType.BOOL)
        last = ix.c64(2 ** 63 - 1)
        out += [Let(m, p), BlockReduce(m, KOp.MAX, self.scratch(dt)),
                Let(c, ix.select(same, p_i, last)), BlockReduce(c, KOp.MIN,
                                                                self.scratch(DType.I64))]
        fold = Var(self.fresh("take"), DType.BOOL)
        return out + [Let(fold, argmax_take(m, best)), Assign(best, ix.select(fold, m, best)),
                      Assign(best_i, ix.select(fold, c, best_i))]

    def scratch(self, dt: DType) -> str:
        """A new shared slot of `nt` 8-byte elements for one BlockReduce of `dt` values."""
        buf = Buffer(f"sh{len(self.shared)}", dt, self.nt, BufKind.SHARED,
                     offset=len(self.shared) * self.nt * 8)
        self.shared.append(buf)
        return buf.name

    def cascaded(self, nest, inner, partial: dict, sums: list) -> list[Stmt]:
        """The split loop with each float sum added up in CASCADE_LEVELS levels of CASCADE
        terms: level k is carried into level k + 1 (the last into the partial) when full."""
        dt = {n: partial[n].dtype for n in sums}
        levels = [{n: Var(self.fresh("q"), dt[n]) for n in sums} for _ in range(CASCADE_LEVELS)]
        counts = [Var(self.fresh("c"), DType.I64) for _ in range(CASCADE_LEVELS)]
        zero = {n: Const(0.0, dt[n]) for n in sums}
        out: list[Stmt] = [Let(q, zero[n]) for lvl in levels for n, q in lvl.items()]
        out += [Let(c, ix.c64(0)) for c in counts]

        def up(k: int) -> dict:
            return levels[k + 1] if k + 1 < len(levels) else partial

        def carry(k: int) -> tuple[Stmt, ...]:
            full = [Assign(up(k)[n], _add(up(k)[n], levels[k][n])) for n in sums]
            full += [Assign(levels[k][n], zero[n]) for n in sums] + [Assign(counts[k], ix.c64(0))]
            more = carry(k + 1) if k + 1 < len(levels) else ()
            return (Assign(counts[k], ix.iadd(counts[k], ix.c64(1))),
                    If(ix.cmp(KOp.EQ, counts[k], ix.c64(CASCADE)), tuple(full) + more))

        body = _rename(inner, {**partial, **levels[0]}) + carry(0)
        out += _split(LoopKind.THREADS, nest, body, self.fresh)
        out += [Assign(up(k)[n], _add(up(k)[n], levels[k][n]))
                for k in range(len(levels)) for n in sums]
        return out


def _rename(inner, to: dict[str, Var]) -> tuple[Stmt, ...]:
    """A tree body with accumulator `acc = acc op e` updating `to[acc]` instead."""
    out = []
    for s in inner:
        if isinstance(s, Assign) and s.var.name in to:
            v = to[s.var.name]
            s = Assign(v, Call(s.value.op, (v, s.value.args[1]), s.value.dtype))
        out.append(s)
    return tuple(out)


def _add(a: Var, b: Var) -> Call:
    return Call(KOp.ADD, (a, b), a.dtype)


# -- GEMMs and copies -----------------------------------------------------------------------------
def _gemm(k: GemmKernel, name: str, t: Target) -> GpuKernel | None:
    nb = _prod(k.batch)
    if k.m == 0 or k.n == 0 or nb == 0:
        return None
    nz = 1 if k.accumulate_batches else nb
    big = t.gemm_large
    tiles = big if k.m >= big.bm and k.n >= big.bn else t.gemm_small
    shared: tuple = ()
    if nb * k.m * k.n * k.k >= t.gemm_tiled_min and -(-k.m // tiles.bm) <= 65535:
        grid: tuple = (-(-k.n // tiles.bn), -(-k.m // tiles.bm), min(nz, 65535))
        block: tuple = (tiles.tx, tiles.ty)
        # A^T as [bk][bm + 1] (the pad spreads the loader's k-strided stores over the banks),
        # then B as [bk][bn].
        shared = (Buffer("tiles", k.dtype, tiles.bk * (tiles.bm + 1 + tiles.bn),
                         BufKind.SHARED),)
    else:
        tiles = None
        grid, block = _grid(t, nz * k.m * k.n)
    # C is scratch when there is an epilogue: only the epilogue's stores are results.
    writes = facts(k.epilogue).writes if k.epilogue else (k.c.buf,)
    return GpuKernel(name, grid, block, (), k.reads, writes, shared, gemm=k, tiles=tiles,
                     src=k.src)


def _copy(k: CopyKernel, name: str, t: Target, bufs: dict) -> GpuKernel:
    i = Var("i")
    value = Load(k.src_buf, i, bufs[k.src_buf].dtype)
    dst = bufs[k.dst_buf].dtype
    if value.dtype != dst:
        value = Call(KOp.CAST, (value,), dst)
    body = (Loop("i", k.size, (Store(k.dst_buf, i, value),), LoopKind.GRID),)
    return GpuKernel(name, *_grid(t, k.size), body, (k.src_buf,), (k.dst_buf,), src=k.src)


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


__all__ = ["CASCADE", "CASCADE_LEVELS", "SIM_TARGET", "Target", "Tiles", "map_to_gpu"]
