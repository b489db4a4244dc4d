"""Kernel-IR `Program` -> the Python source of Numba `@cuda.jit` kernels plus a host launch plan.

Loop kernels: the outermost parallel loop (with the independent loops nested right inside it,
flattened) becomes a grid-stride loop, one thread per iteration, inner loops serial. Where rows
are few but their reductions long (a full sum, softmax over long rows, a column sum), each row
gets a block instead, whose threads split the reduce loops and combine their partials with a
shared-memory tree. A top-level serial nest of `+=` stores (scatter-add) runs in parallel with
atomic adds. GEMMs: see `gemm`. Scans: a host loop over the body's own plan. Copies: `_copy`.

NOTE: the text is compiled with Python's `compile()`, but it is not user input: every identifier
comes from our own IR (sanitized to [A-Za-z0-9_] and prefixed), constants are rendered from typed
numbers, and the only user text (source locations) goes into comments, escaped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nnjit.backends.cuda import gemm
from nnjit.backends.cuda.source import PREAMBLE, Emitter, Namer, comment, template
from nnjit.codegen.analysis import (accesses, affine_terms, deps, facts, interval, loads_of,
                                    loops_in)
from nnjit.ir import CompileError, DType
from nnjit.ir.kernel import (
    Assign,
    Call,
    CopyKernel,
    GemmKernel,
    KOp,
    Let,
    Load,
    Loop,
    LoopKernel,
    LoopKind,
    Program,
    ScanKernel,
    Store,
    Var,
    children,
)


#: A thread's share of a float sum is added up in CASCADE_LEVELS levels of CASCADE terms each
#: (see `_Module._cascaded`).
CASCADE = 32
CASCADE_LEVELS = 3


@dataclass(frozen=True)
class Target:
    """Launch geometry. Kernels are correct for any of these values (tests vary them); they
    only trade parallelism against per-launch cost."""

    threads: int = 256          # threads per block of grid-stride kernels
    max_blocks: int = 4096      # grid size cap (grid-stride loops cover the rest)
    reduce_block: int = 256     # largest block of a block-per-row reduction (a power of two)
    reduce_min: int = 128       # a row reduction at least this long gets a block
    gemm_tiled_min: int = 1 << 18    # GEMMs with fewer multiply-adds use the simple kernel
    gemm_small: gemm.Tiles = gemm.Tiles(8, 8, 2, 2, 8)
    gemm_large: gemm.Tiles = gemm.Tiles(16, 16, 4, 4, 8)


#: What the simulator runs: a few threads per launch, since each is a Python thread there (a
#: 1-thread launch costs ~0.3 ms, a 128-thread one ~15 ms). Still more than one thread and one
#: block, so every test exercises the grid-stride and block-sharing logic.
SIM_TARGET = Target(threads=2, max_blocks=2, reduce_block=4, reduce_min=128,
                    gemm_small=gemm.Tiles(2, 2, 2, 2, 4), gemm_large=gemm.Tiles(4, 4, 2, 2, 4))


@dataclass(frozen=True)
class Launch:
    """kernel[grid, block](*args): args are buffer names, or ints in a 1-tuple."""

    kernel: str
    grid: tuple[int, ...]
    block: tuple[int, ...]
    args: tuple
    src: str = ""
    shared: int = 0     # bytes of dynamic shared memory


@dataclass
class ScanPlan:
    kernel: ScanKernel
    body: "ProgramPlan"


@dataclass
class ProgramPlan:
    program: Program
    steps: list = field(default_factory=list)     # Launch | ScanPlan, in order


@dataclass(frozen=True)
class Rendered:
    source: str
    plan: ProgramPlan


def render(program: Program, target: Target = Target()) -> Rendered:
    m = _Module(target)
    plan = m.program(program, "")
    return Rendered(PREAMBLE + "\n" + "\n".join(m.chunks), plan)


class _Module:
    def __init__(self, target: Target):
        self.t = target
        self.chunks: list[str] = []
        self.names = Namer(["math", "cuda", "float32", "float64", "int32", "int64", "uint64",
                            "bool_"])

    def program(self, p: Program, prefix: str) -> ProgramPlan:
        plan = ProgramPlan(p)
        bufs = {b.name: b for b in p.buffers}
        inlined = gemm.inlinable_producers(p)
        for i, k in enumerate(p.kernels):
            if isinstance(k, LoopKernel):
                if i in inlined.skip:
                    continue
                plan.steps += self.loop_kernel(k, prefix, bufs)
            elif isinstance(k, GemmKernel):
                fn = self.names.fresh("k_", prefix + k.name)
                text, launch = gemm.render(k, fn, self.t, bufs, inlined.for_gemm(i))
                self.chunks.append(text)
                if launch is not None:
                    plan.steps.append(launch)
            elif isinstance(k, CopyKernel):
                if k.size:
                    plan.steps.append(Launch("_copy", *self.grid(k.size),
                                             (k.src_buf, k.dst_buf, (k.size,)), k.src))
            elif isinstance(k, ScanKernel):
                plan.steps.append(ScanPlan(k, self.program(k.body, f"{prefix}{k.name}__")))
            else:
                raise CompileError(f"{p.name}: unknown kernel {k!r}")
        return plan

    def grid(self, n: int) -> tuple[tuple[int], tuple[int]]:
        block = min(self.t.threads, max(1, n))
        return (min(self.t.max_blocks, -(-n // block)),), (block,)

    # -- loop kernels -----------------------------------------------------------------------
    def loop_kernel(self, k: LoopKernel, prefix: str, bufs) -> list[Launch]:
        launches = []
        for j, seg in enumerate(_segments(k.body)):
            name = self.names.fresh("k_", prefix + k.name + (f"_{j}" if j else ""))
            launch = self.segment(k, seg, name)
            if launch is not None:
                launches.append(launch)
        return launches

    def segment(self, k: LoopKernel, seg: tuple, name: str) -> Launch | None:
        used = _buffers(seg)
        lnames = Namer(["_i", "_n", "_f", "_tid", "_nt", "_row", "_s"])
        params = {b: lnames.fresh("b_", b) for b in used}
        em = Emitter(params, lnames, indent=1)
        header = [f"# {comment(k.src)}"] if k.src else []
        header += ["@cuda.jit", f"def {name}({', '.join(params.values())}):"]
        args = tuple(used)
        par = seg[0] if len(seg) == 1 and isinstance(seg[0], Loop) and \
            seg[0].kind == LoopKind.PARALLEL else None
        if par is not None:
            loops, body = _flatten(par)
            rows = _prod(lp.extent for lp in loops)
        else:
            loops, body, rows = [], seg, 1
        if rows == 0:
            return None
        atomic = _atomic_nest(seg) if par is None else None
        blk = _block_plan(body)
        shared = 0
        if atomic is not None:
            loops, inner = atomic
            total = _prod(lp.extent for lp in loops)
            if total == 0:
                return None
            self._grid_stride(em, loops, total, inner, atomic=True)
            grid, block = self.grid(total)
        elif blk is not None and (par is None or blk >= self.t.reduce_min
                                  or rows < self.t.threads <= blk):
            nt = min(self.t.reduce_block, _pow2(blk))
            shared = self._block_rows(em, loops, rows, body, nt)
            grid, block = (min(self.t.max_blocks, rows),), (nt,)
        else:
            self._grid_stride(em, loops, rows, body)
            grid, block = self.grid(rows)
        self.chunks.append("\n".join(header + em.lines) + "\n")
        return Launch(name, grid, block, args, k.src, shared)

    @staticmethod
    def _grid_stride(em: Emitter, loops, total: int, body, atomic: bool = False) -> None:
        em.line("_i = cuda.grid(1)")
        em.line("_n = cuda.gridsize(1)")
        em.line(f"for _f in range(_i, {total}, _n):")
        em.push()
        _unravel(em, "_f", loops)
        if atomic:
            for s in body:
                if isinstance(s, Store):
                    idx = em.expr(s.index)
                    val = em.expr(s.value.args[1])
                    em.line(f"cuda.atomic.add({em.buf(s.buf)}, {idx}, {val})")
                    em.forget({("b", s.buf)})
                else:
                    em.stmt(s)
        else:
            em.stmts(body)
        em.pop()

    def _block_rows(self, em: Emitter, loops, rows: int, body, nt: int) -> int:
        """One block per row: see `_block_plan` for how each statement is shared. Returns the
        bytes of dynamic shared memory its trees use (one nt-slot of 8 bytes per tree)."""
        em.line("_tid = cuda.threadIdx.x")
        em.line("_nt = cuda.blockDim.x")
        self._slots = 0
        self._dyn: dict[str, str] = {}
        em.line(f"for _row in range(cuda.blockIdx.x, {rows}, cuda.gridDim.x):")
        em.push()
        _unravel(em, "_row", loops)
        sync = False
        for s in body:
            if sync:
                em.line("cuda.syncthreads()")
                sync = False
            kind = _classify(s)
            if kind in ("let", "pure"):
                em.stmt(s)
            elif kind == "store":
                em.line("if _tid == 0:")
                em.push()
                em.stmt(s)
                em.pop()
                sync = True
            elif kind == "dist":
                nest, inner = _flatten(s)
                self._distributed(em, nest, inner)
                sync = True
            elif kind == "serial":
                self._serial(em, s)
                sync = True
            else:
                self._tree(em, s, nt)
        em.pop()
        em.lines[:0] = [f"    {py} = cuda.shared.array(0, {dt})" for dt, py in self._dyn.items()]
        return self._slots * nt * 8

    def _serial(self, em: Emitter, s: Loop) -> None:
        """Steps in order (a column sum's rows, or its blocks of rows), each split over the
        threads, with a barrier after each."""
        em.forget(facts(s.body).effects)
        py = em.names.fresh("v_", s.var)
        em.line(f"for {py} in range({s.extent}):")
        em.push()
        em.bind(s.var, py)
        for t in s.body:
            if _classify(t) == "serial":
                self._serial(em, t)
            else:
                nest, inner = _flatten(t)
                self._distributed(em, nest, inner)
                em.line("cuda.syncthreads()")
        em.pop()
        em.forget(facts(s.body).effects)

    @staticmethod
    def _distributed(em: Emitter, nest, inner, acc_names=None) -> None:
        total = _prod(lp.extent for lp in nest)
        py = em.names.fresh("_j")
        em.forget(facts(inner).effects)
        em.line(f"for {py} in range(_tid, {total}, _nt):")
        em.push()
        for ir_name, py_name in (acc_names or {}).items():
            em.bind(ir_name, py_name)
        _unravel(em, py, nest)
        em.stmts(inner)
        em.pop()
        em.forget(facts(inner).effects)

    def _cascaded(self, em: Emitter, nest, inner, partial: dict, sums: dict) -> None:
        """A thread's share of a float sum added up in CASCADE_LEVELS levels of CASCADE terms
        (a running sum over a long share drifts like n * eps: 2^20 terms per thread for a
        2^28-term row)."""
        levels = [{n: em.names.fresh("_q") for n in sums} for _ in range(CASCADE_LEVELS)]
        counts = [em.names.fresh("_c") for _ in range(CASCADE_LEVELS)]
        for lvl in levels:
            for n, q in lvl.items():
                em.line(f"{q} = {partial[n]}")
        for c in counts:
            em.line(f"{c} = 0")
        leaf = {**partial, **levels[0]}
        total = _prod(lp.extent for lp in nest)
        py = em.names.fresh("_j")
        em.forget(facts(inner).effects)
        em.line(f"for {py} in range(_tid, {total}, _nt):")
        em.push()
        for ir_name, py_name in leaf.items():
            em.bind(ir_name, py_name)
        _unravel(em, py, nest)
        em.stmts(inner)
        for k, c in enumerate(counts):      # carry a full level into the one above
            up = levels[k + 1] if k + 1 < len(levels) else partial
            em.line(f"{c} += 1")
            em.line(f"if {c} == {CASCADE}:")
            em.push()
            for n in sums:
                em.line(f"{up[n]} = {up[n]} + {levels[k][n]}")
                em.line(f"{levels[k][n]} = {_identity(KOp.ADD, sums[n])}")
            em.line(f"{c} = 0")
        for _ in counts:
            em.pop()
        em.pop()
        em.forget(facts(inner).effects)
        for k in range(len(levels)):
            up = levels[k + 1] if k + 1 < len(levels) else partial
            for n in sums:
                em.line(f"{up[n]} = {up[n]} + {levels[k][n]}")

    def _tree(self, em: Emitter, s: Loop, nt: int) -> None:
        """Partials over a strided share of the nest, then a tree in shared memory. Trees use
        slots of the dynamic shared memory (one declaration per dtype: no static arrays, whose
        first-touch allocation races in Numba's simulator)."""
        nest, inner = _perfect(s)
        accs = _tree_accs(inner)
        partial = {}
        for name, (op, dt) in accs.items():
            p = em.names.fresh("_p")
            partial[name] = p
            em.line(f"{p} = {_identity(op, dt)}")
        share = -(-_prod(lp.extent for lp in nest) // nt)     # terms one thread adds up
        sums = [n for n, (op, dt) in accs.items() if op == KOp.ADD and dt.is_float]
        if share > CASCADE and sums:
            self._cascaded(em, nest, inner, partial, {n: accs[n][1] for n in sums})
        else:
            self._distributed(em, nest, inner, partial)
        for name, (op, dt) in accs.items():
            sh = self._dyn.setdefault(_np(dt), f"_sh_{_np(dt)}")
            base = self._slots * nt * 8 // dt.itemsize
            self._slots += 1
            me, mate, first = (f"{sh}[_tid + {base}]", f"{sh}[_tid + _s + {base}]",
                               f"{sh}[{base}]")
            p = partial[name]
            comb = _combine(op, dt)
            em.line(f"{me} = {p}")
            em.line("cuda.syncthreads()")
            em.line("_s = _nt // 2")
            em.line("while _s > 0:")
            em.push()
            em.line("if _tid < _s:")
            em.push()
            em.line(f"{me} = {comb.format(me, mate)}")
            em.pop()
            em.line("cuda.syncthreads()")
            em.line("_s //= 2")
            em.pop()
            acc = em.var(name)
            em.forget({("v", name)})
            em.line(f"{acc} = {comb.format(acc, first)}")
            em.line("cuda.syncthreads()")


# -- loop analysis ------------------------------------------------------------------------------
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


def _buffers(stmts) -> list[str]:
    """Every buffer the statements read or write, in first-use order."""
    reads, writes, _ = accesses(stmts)
    return list(dict.fromkeys(reads + writes))


def _independent(loop: Loop) -> bool:
    """Iterations of `loop` touch disjoint state: no accumulator of an enclosing scope is
    updated, and every buffer both stored and loaded inside is only accessed in a slab of its
    own per iteration (`_slabbed`: e.g. a pooling gradient's image planes)."""
    w = facts(loop.body).effects
    outer_vars = {v for k, v in w if k == "v"} - facts(loop.body).declared
    stores = {b for k, b in w if k == "b"}
    return not outer_vars and all(_slabbed(loop, b) for b in stores & set(facts(loop.body).reads))


def _slabbed(loop: Loop, buf: str) -> bool:
    """Every index of `buf` in the body is c * loop.var + rest, one c for all, with every rest
    (over the body's own loops; variables of enclosing loops are fixed) inside a window
    narrower than c: so iteration v only touches [c*v + lo, c*v + hi] and the slabs are
    disjoint."""
    ranges = {lp.var: lp.extent for lp in loops_in(loop.body)}
    lo = hi = coef = None
    for idx in loads_of(loop.body, buf):
        terms = affine_terms(idx)
        if terms is None:
            return False
        c, rest = terms.pop(loop.var, 0), 0
        r_lo = r_hi = 0
        for key, k in terms.items():
            if isinstance(key, str) and key not in ranges:
                continue            # a variable of an enclosing loop: fixed per iteration
            t_lo, t_hi = (0, ranges[key] - 1) if isinstance(key, str) else interval(key, ranges)
            r_lo, r_hi = r_lo + min(k * t_lo, k * t_hi), r_hi + max(k * t_lo, k * t_hi)
        if coef is None:
            coef = c
        if c != coef or c <= 0:
            return False
        lo, hi = (r_lo, r_hi) if lo is None else (min(lo, r_lo), max(hi, r_hi))
        del rest
    return coef is not None and hi - lo < coef


def _flatten(par: Loop) -> tuple[list[Loop], tuple]:
    """The parallel loop and the independent loops perfectly nested in it, and the body."""
    loops, body = [par], par.body
    while len(body) == 1 and isinstance(body[0], Loop) and _independent(body[0]):
        loops.append(body[0])
        body = body[0].body
    return loops, body


def _perfect(s: Loop) -> tuple[list[Loop], tuple]:
    loops, body = [s], s.body
    while len(body) == 1 and isinstance(body[0], Loop):
        loops.append(body[0])
        body = body[0].body
    return loops, body


def _unravel(em: Emitter, flat: str, loops) -> None:
    """Bind each loop's variable to its coordinate in the row-major flat index `flat`."""
    rest = flat
    for n, lp in enumerate(reversed(loops)):
        py = em.names.fresh("v_", lp.var)
        em.bind(lp.var, py)
        if n == len(loops) - 1:
            em.line(f"{py} = {rest}")
        else:
            em.line(f"{py} = {rest} % {lp.extent}")
            nxt = em.names.fresh("_q")
            em.line(f"{nxt} = {rest} // {lp.extent}")
            rest = nxt


_TREE_OPS = {KOp.ADD, KOp.MAX, KOp.MIN}


def _tree_accs(inner) -> dict[str, tuple[KOp, DType]] | None:
    """Accumulators of a tree-reducible innermost body: only lets and `acc = acc (+|max|min) e`
    with e independent of the accumulators updated here."""
    accs: dict[str, tuple[KOp, DType]] = {}
    for s in inner:
        if isinstance(s, Assign):
            v = s.value
            if (not isinstance(v, Call) or v.op not in _TREE_OPS or v.dtype == DType.BOOL
                    or s.var.name in accs or v.args[0] != Var(s.var.name, s.var.dtype)):
                return None
            accs[s.var.name] = (v.op, v.dtype)
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


def _classify(s) -> str | None:
    """How a row statement runs in a block: every thread ("let", "pure": identical values),
    thread 0 ("store"), split over the threads ("dist"), split then combined ("tree"), or a
    serial loop whose body is one such split loop ("serial": a column reduction's rows)."""
    if isinstance(s, (Let, Assign)):
        return "let"
    if isinstance(s, Store):
        return "store"
    w = facts(s.body).effects
    if any(k == "b" for k, _ in w):
        if _independent(s):
            return "dist"
        outer = {v for k, v in w if k == "v"} - facts(s.body).declared
        if not outer and s.body and all(isinstance(t, Loop) and _classify(t) in
                                        ("dist", "serial") for t in s.body):
            return "serial"
        return None
    nest, inner = _perfect(s)
    accs = _tree_accs(inner)
    if accs is not None and not (set(accs) & {lp.var for lp in nest}):
        return "tree"
    return "pure"


def _block_plan(body) -> int | None:
    """The longest shared loop if every statement of a row can run block-wide, else None."""
    longest = 0
    for s in body:
        kind = _classify(s)
        if kind is None:
            return None
        if kind == "tree":
            longest = max(longest, _prod(lp.extent for lp in _perfect(s)[0]))
        elif kind == "dist":
            longest = max(longest, _prod(lp.extent for lp in _flatten(s)[0]))
        elif kind == "serial":
            longest = max(longest, _serial_width(s))
    return longest if longest else None


def _serial_width(s: Loop) -> int:
    """The widest split loop inside a "serial" loop."""
    return max(_prod(lp.extent for lp in _flatten(t)[0]) if _classify(t) == "dist"
               else _serial_width(t) for t in s.body)


def _atomic_nest(seg) -> tuple[list[Loop], tuple] | None:
    """A serial nest whose only stores are `b[i] = b[i] + v` (v not reading b) becomes a
    grid-wide loop of atomic adds."""
    if len(seg) != 1 or not isinstance(seg[0], Loop):
        return None
    loops, inner = _perfect(seg[0])
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


def _np(dt: DType) -> str:
    from nnjit.backends.cuda.source import NP_NAME

    return NP_NAME[dt]


def _identity(op: KOp, dt: DType) -> str:
    import numpy as np

    if op == KOp.ADD:
        return f"{_np(dt)}(0)"
    if dt.is_float:
        return f"{_np(dt)}({'-' if op == KOp.MAX else ''}math.inf)"
    info = np.iinfo(dt.np)
    return f"{_np(dt)}({info.min if op == KOp.MAX else info.max})"


def _combine(op: KOp, dt: DType) -> str:
    call = Call(op, (Var("a", dt), Var("b", dt)), dt)
    return template(call).replace("{T}", _np(dt))
