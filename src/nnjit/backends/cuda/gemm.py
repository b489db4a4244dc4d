"""A GEMM launch (a GpuKernel with `gemm`, planned by `codegen.gpu`) -> the body of a Numba CUDA
kernel: shared-memory tiles with a register block per thread when `tiles` is set, one thread
per element of C otherwise; both over the MatViews' generic strides, with the batch on the
grid's z axis (or summed in-kernel for `accumulate_batches`) and the epilogue applied as each
element of C is stored.

Implicit GEMM: an inlined operand (`codegen.inline`) is not materialized; the loader computes
each element it needs from the producer's expression (`operand_element`).
"""
from __future__ import annotations

from ...codegen.inline import operand_element
from ...ir.kernel import GemmKernel, GpuKernel, Tiles, Var
from .source import NP_NAME


def render(g: GpuKernel, em) -> None:
    """The body of GEMM launch `g` into Emitter `em` (tiled when `g.tiles` is set)."""
    k = g.gemm
    nb = 1
    for d in k.batch:
        nb *= d
    r = _Gemm(k, em, nb)
    nz = 1 if k.accumulate_batches else nb
    if g.tiles is not None:
        r.tiled(g.tiles, nz)
    else:
        r.simple(nz)


class _Gemm:
    def __init__(self, k: GemmKernel, em, nb: int):
        self.k, self.em, self.nb = k, em, nb
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
        op = self.k.inlined_operand(view.buf)
        if op is None:
            py = em.names.fresh("_e")
            em.line(f"{py} = {em.buf(view.buf)}[{flat}]")
            return py
        f = em.names.fresh("_g")
        em.line(f"{f} = {flat}")
        lets, value = operand_element(op, Var(" flat"))   # a name no IR variable has
        # Each producer's loop variables get their own scope: two producers (A's and B's) may
        # name their loops alike, and a cached subexpression of one must not serve the other.
        em.vars.append({" flat": f})
        em.memo.append({})
        try:
            em.stmts(lets)
            return em.expr(value)
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
