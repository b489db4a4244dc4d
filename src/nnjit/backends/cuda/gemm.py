"""GemmKernel -> a Numba CUDA kernel: shared-memory tiles with a register block per thread for
large products, one thread per element of C for small ones; both over the MatViews' generic
strides, with the batch on the grid's z axis (or summed in-kernel for `accumulate_batches`) and
the epilogue applied as each element of C is stored.

Implicit GEMM: an operand materialized by a loop kernel that only this GEMM reads (conv2d's
im2col columns, a relayout) is not materialized at all; the tile loader evaluates the producer's
expression for each element it needs, and the producer's launch is skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nnjit.backends.cuda.source import NP_NAME, Emitter, Namer, comment
from nnjit.codegen.analysis import affine, deps, memory_region
from nnjit.codegen.analysis import accesses
from nnjit.ir import DType
from nnjit.ir.kernel import (
    BufKind,
    Call,
    Const,
    GemmKernel,
    KOp,
    Loop,
    LoopKernel,
    Program,
    Store,
    Var,
)


@dataclass(frozen=True)
class Tiles:
    """A block of tx x ty threads computing (ty*tm) x (tx*tn) of C, k in steps of bk."""

    tx: int
    ty: int
    tm: int
    tn: int
    bk: int

    @property
    def bm(self) -> int:
        return self.ty * self.tm

    @property
    def bn(self) -> int:
        return self.tx * self.tn


# -- producers that can be inlined into a GEMM's operand loads ------------------------------------
@dataclass
class Inlined:
    skip: set = field(default_factory=set)            # producer kernel indices not launched
    by_gemm: dict = field(default_factory=dict)       # gemm index -> {buf: (loops, store)}

    def for_gemm(self, i: int) -> dict:
        return self.by_gemm.get(i, {})


def producer_nest(k: LoopKernel) -> tuple[list[Loop], Store] | None:
    """(loops, store) when `k` is one perfect nest storing element-by-element in row-major order
    of its loops: then element f of the buffer is the store's value at unravel(f)."""
    if len(k.body) != 1 or not isinstance(k.body[0], Loop):
        return None
    loops, body = [k.body[0]], k.body[0].body
    while len(body) == 1 and isinstance(body[0], Loop):
        loops.append(body[0])
        body = body[0].body
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


def _same_memory(bufs, x: str, y: str) -> bool:
    (r1, a1, b1), (r2, a2, b2) = memory_region(bufs, x), memory_region(bufs, y)
    return r1 == r2 and a1 < b2 and a2 < b1


def inlinable_producers(p: Program) -> Inlined:
    """Operands of each GEMM whose producing loop kernel can run inside the GEMM's loads."""
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
            loads = {b for kind, b in deps(nest[1].value, {}) if kind == "b"}
            if total != bufs[name].size or any(
                    _same_memory(bufs, w, x) for j in range(pi + 1, gi + 1) for w in ks[j].writes
                    for x in loads):
                continue
            out.skip.add(pi)
            out.by_gemm.setdefault(gi, {})[name] = nest
    return out


# -- rendering ----------------------------------------------------------------------------------
def render(k: GemmKernel, fn: str, target, bufs, producers: dict):
    """(source of kernel `fn`, its Launch) or ("", None) when C is empty."""
    from nnjit.backends.cuda.render import Launch

    nb = 1
    for d in k.batch:
        nb *= d
    if k.m == 0 or k.n == 0 or nb == 0:
        return "", None
    used = _used(k, producers)
    names = Namer(["_i", "_n", "_f", "_tid", "_tx", "_ty", "_z", "_row", "_col", "_acc"])
    params = {b: names.fresh("b_", b) for b in used}
    em = Emitter(params, names, indent=1)
    nz = 1 if k.accumulate_batches else nb
    big = target.gemm_large
    tiles = big if k.m >= big.bm and k.n >= big.bn else target.gemm_small
    tiled = nb * k.m * k.n * k.k >= target.gemm_tiled_min and -(-k.m // tiles.bm) <= 65535
    r = _Gemm(k, em, producers, nb)
    shared = 0
    if tiled:
        r.tiled(tiles, nz)
        grid = (-(-k.n // tiles.bn), -(-k.m // tiles.bm), min(nz, 65535))
        block = (tiles.tx, tiles.ty)
        shared = tiles.bk * (tiles.bm + 1 + tiles.bn) * k.dtype.itemsize
    else:
        r.simple(nz)
        total = nz * k.m * k.n
        b = min(target.threads, total)
        grid, block = (min(target.max_blocks, -(-total // b)),), (b,)
    head = [f"# {comment(k.src)}"] if k.src else []
    head += ["@cuda.jit", f"def {fn}({', '.join(params.values())}):"]
    return "\n".join(head + em.lines) + "\n", Launch(fn, grid, block, tuple(used), k.src,
                                                      shared)


def _used(k: GemmKernel, producers) -> list[str]:
    """Buffers the GEMM touches: its operands (or what their inlined producers load), C when
    there is no epilogue, and everything the epilogue reads or writes."""
    out: dict[str, None] = {}
    for view in (k.a, k.b):
        if view.buf in producers:
            out.update(dict.fromkeys(accesses([producers[view.buf][1]])[0]))
        else:
            out[view.buf] = None
    if not k.epilogue:
        out[k.c.buf] = None
    reads, writes, _ = accesses(k.epilogue)
    out.update(dict.fromkeys(reads + writes))
    return list(out)


class _Gemm:
    def __init__(self, k: GemmKernel, em: Emitter, producers, nb: int):
        self.k, self.em, self.producers, self.nb = k, em, producers, nb
        self.T = NP_NAME[k.dtype]

    def batch_coords(self, flat: str) -> list[str]:
        """Python names of the batch coordinates of flat batch index `flat`."""
        em, out, rest = self.em, [], flat
        for n, d in enumerate(reversed(self.k.batch)):
            py = em.names.fresh("_bc")
            if n == len(self.k.batch) - 1:
                em.line(f"{py} = {rest}")
            else:
                em.line(f"{py} = {rest} % {d}")
                q = em.names.fresh("_q")
                em.line(f"{q} = {rest} // {d}")
                rest = q
            out.append(py)
        return list(reversed(out))

    def offsets(self, coords: list[str]) -> tuple[str, str]:
        out = []
        for view in (self.k.a, self.k.b):
            terms = [str(view.offset)] + [f"{c} * {s}" for c, s in zip(coords, view.batch_strides)
                                          if s]
            py = self.em.names.fresh("_off")
            self.em.line(f"{py} = {' + '.join(terms)}")
            out.append(py)
        return out[0], out[1]

    def element(self, which: str, off: str, r: str, c: str) -> str:
        """The value of A[r, c] or B[r, c] (`off`: the batch's offset) as a Python name."""
        view = self.k.a if which == "a" else self.k.b
        em = self.em
        flat = f"{off} + {r} * {view.row_stride} + {c} * {view.col_stride}"
        if view.buf not in self.producers:
            py = em.names.fresh("_e")
            em.line(f"{py} = {em.buf(view.buf)}[{flat}]")
            return py
        loops, st = self.producers[view.buf]
        f = em.names.fresh("_g")
        em.line(f"{f} = {flat}")
        from nnjit.backends.cuda.render import _unravel

        # Each producer's loop variables get their own scope: two producers (A's and B's) may
        # name their loops alike, and a cached subexpression of one must not serve the other.
        em.vars.append({})
        em.memo.append({})
        try:
            _unravel(em, f, loops)
            return em.expr(st.value)
        finally:
            em.vars.pop()
            em.memo.pop()

    def accumulate_loop(self, z: str, body) -> list[str]:
        """Run body(a_off, b_off) for the batch of `z` (or every batch when accumulating);
        returns the batch coordinates the epilogue sees."""
        em, k = self.em, self.k
        if not k.accumulate_batches:
            coords = self.batch_coords(z)
            body(*self.offsets(coords))
            return coords
        em.line(f"for _bz in range({self.nb}):")
        em.push()
        body(*self.offsets(self.batch_coords("_bz")))
        em.pop()
        last, coords = self.nb - 1, []
        for d in reversed(k.batch):
            coords.append(str(last % d))
            last //= d
        return list(reversed(coords))

    def store(self, acc: str, row: str, col: str, coords: list[str]) -> None:
        em, k = self.em, self.k
        if not k.epilogue:
            c = k.c
            terms = [str(c.offset)] + [f"{x} * {s}" for x, s in zip(coords, c.batch_strides)
                                       if s]
            em.line(f"{em.buf(c.buf)}[{' + '.join(terms)} + {row} * {c.row_stride} + "
                    f"{col} * {c.col_stride}] = {acc}")
            return
        em.vars.append({})
        em.memo.append({})
        for name, py in [("acc", acc), ("row", row), ("col", col)] + [
                (f"b{j}", x) for j, x in enumerate(coords)]:
            em.bind(name, py)
        em.stmts(k.epilogue)
        em.vars.pop()
        em.memo.pop()

    # -- one thread per element ----------------------------------------------------------------
    def simple(self, nz: int) -> None:
        em, k = self.em, self.k
        em.line("_i = cuda.grid(1)")
        em.line("_n = cuda.gridsize(1)")
        em.line(f"for _f in range(_i, {nz * k.m * k.n}, _n):")
        em.push()
        em.line(f"_col = _f % {k.n}")
        em.line(f"_row = (_f // {k.n}) % {k.m}")
        em.line(f"_z = _f // {k.m * k.n}")
        em.line(f"_acc = {self.T}(0)")

        def body(ao, bo):
            em.line(f"for _kk in range({k.k}):")
            em.push()
            a = self.element("a", ao, "_row", "_kk")
            b = self.element("b", bo, "_kk", "_col")
            em.line(f"_acc = _acc + {a} * {b}")
            em.pop()

        coords = self.accumulate_loop("_z", body)
        self.store("_acc", "_row", "_col", coords)
        em.pop()

    # -- shared-memory tiles ------------------------------------------------------------------
    def tiled(self, t: Tiles, nz: int) -> None:
        em, k, T = self.em, self.k, self.T
        nt = t.tx * t.ty
        # Both tiles live in dynamic shared memory: A^T as [bk][bm + 1] (the pad spreads the
        # loader's k-strided stores over the banks), then B as [bk][bn].
        em.line(f"_sh = cuda.shared.array(0, {T})")
        em.line("_tx = cuda.threadIdx.x")
        em.line("_ty = cuda.threadIdx.y")
        em.line(f"_tid = _ty * {t.tx} + _tx")
        em.line(f"_row0 = cuda.blockIdx.y * {t.bm}")
        em.line(f"_col0 = cuda.blockIdx.x * {t.bn}")
        em.line(f"for _z in range(cuda.blockIdx.z, {nz}, cuda.gridDim.z):")
        em.push()
        accs = [[f"_c{i}_{j}" for j in range(t.tn)] for i in range(t.tm)]
        for row in accs:
            for a in row:
                em.line(f"{a} = {T}(0)")

        def body(ao, bo):
            em.line(f"for _k0 in range(0, {k.k}, {t.bk}):")
            em.push()
            self.load_tile("a", ao, t, nt)
            self.load_tile("b", bo, t, nt)
            em.line("cuda.syncthreads()")
            em.line(f"for _kk in range({t.bk}):")
            em.push()
            em.line(f"_ka = _kk * {t.bm + 1}")
            em.line(f"_kb = _kk * {t.bn} + {t.bk * (t.bm + 1)}")
            for i in range(t.tm):
                em.line(f"_a{i} = _sh[_ka + _ty + {i * t.ty}]")
            for j in range(t.tn):
                em.line(f"_b{j} = _sh[_kb + _tx + {j * t.tx}]")
            for i in range(t.tm):
                for j in range(t.tn):
                    em.line(f"{accs[i][j]} = {accs[i][j]} + _a{i} * _b{j}")
            em.pop()
            em.line("cuda.syncthreads()")
            em.pop()

        coords = self.accumulate_loop("_z", body)
        for i in range(t.tm):
            for j in range(t.tn):
                em.line(f"_row = _row0 + _ty + {i * t.ty}")
                em.line(f"_col = _col0 + _tx + {j * t.tx}")
                em.line(f"if _row < {k.m} and _col < {k.n}:")
                em.push()
                self.store(accs[i][j], "_row", "_col", coords)
                em.pop()
        em.pop()

    def load_tile(self, which: str, off: str, t: Tiles, nt: int) -> None:
        """Cooperatively copy this k-step's tile of A (bk x bm, transposed) or B (bk x bn) to
        shared memory, zero outside the matrix; consecutive threads read consecutive
        addresses along the operand's unit stride."""
        em, k = self.em, self.k
        view = k.a if which == "a" else k.b
        if which == "a":
            outer, size, row, at = "_r", t.bm, t.bm + 1, 0
            fast_k = view.col_stride == 1
        else:
            outer, size, row, at = "_c", t.bn, t.bn, t.bk * (t.bm + 1)
            fast_k = view.row_stride == 1
        em.line(f"for _l in range(_tid, {t.bk * size}, {nt}):")
        em.push()
        if fast_k:
            em.line(f"_kk = _l % {t.bk}")
            em.line(f"{outer} = _l // {t.bk}")
        else:
            em.line(f"{outer} = _l % {size}")
            em.line(f"_kk = _l // {size}")
        base = "_row0" if which == "a" else "_col0"
        lim = k.m if which == "a" else k.n
        em.line(f"_gx = {base} + {outer}")
        em.line("_gk = _k0 + _kk")
        em.line(f"if _gx < {lim} and _gk < {k.k}:")
        em.push()
        v = self.element(which, off, "_gx", "_gk") if which == "a" else \
            self.element(which, off, "_gk", "_gx")
        slot = f"_sh[{at} + _kk * {row} + {outer}]"
        em.line(f"{slot} = {v}")
        em.pop()
        em.line("else:")
        em.push()
        em.line(f"{slot} = {self.T}(0)")
        em.pop()
        em.pop()
