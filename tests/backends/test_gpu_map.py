"""GPU mapping (`codegen.gpu.map_to_gpu`): the printed GPU form of the kernel shapes that get a
strategy of their own (block-per-row softmax, a column sum's serial steps, scatter-add
atomics, a cascaded full sum), the launch decisions, and the mapped programs run by the
kernel-IR interpreter against the unmapped ones (no GPU or simulator needed)."""
from __future__ import annotations

import functools
import re
import textwrap

import numpy as np
import pytest

import nnjit
from nnjit.codegen import lower_graph
from nnjit.codegen.accumulate import block_sums
from nnjit.codegen.gpu import SIM_TARGET, Target, map_to_gpu
from nnjit.codegen.inline import inline_operands
from nnjit.ir import DType
from nnjit.ir.kernel import (Buffer, BufKind, CopyKernel, GpuKernel, Load, Loop, LoopKernel,
                             LoopKind, Program, ScanKernel, Store, Var, print_kernel)
from nnjit.ir.kernel_eval import run_program
from tests.helpers import assert_close

F32 = DType.F32
SMALL = Target(threads=8, max_blocks=4, reduce_block=8, reduce_min=16)
#: Every row reduction gets a block, every GEMM is tiled.
FORCED = Target(threads=4, max_blocks=3, reduce_block=4, reduce_min=1, gemm_tiled_min=0,
                gemm_small=SIM_TARGET.gemm_small, gemm_large=SIM_TARGET.gemm_large)


def lowered(fn, *args) -> Program:
    """`fn` lowered as the CUDA backend lowers it (row sums blocked for a block's threads)."""
    g = nnjit.compile(fn, *args, backend="interp").graph
    return lower_graph(g, schedule=[("block_sums", functools.partial(block_sums, rows=False))]).program


def mapped_text(p: Program, target: Target = SMALL) -> str:
    kernels = map_to_gpu(p, target).kernels
    return "\n".join(re.sub(r"  // .*", "", print_kernel(k)) for k in kernels)


def zeros(*shape):
    return np.zeros(shape, np.float32)


def expect(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# -- the printed GPU form -----------------------------------------------------------------------
def test_softmax_over_few_long_rows_gets_a_block_per_row():
    got = mapped_text(lowered(lambda a: nnjit.softmax(a, axis=-1), zeros(3, 40)))
    assert got == expect("""
        kernel k0_fusion(reads in0; writes out0) on grid (3,) x block (8,), shared 96B:
          sh0: f32[8] shared @ smem+0
          sh1: f32[8] shared @ smem+64
          block for i0 in [0, 3):
            let acc0: f32 = -inf
            let p0: f32 = -inf
            thread for r0_0 in [0, 40):
              p0 = max(p0, in0[((i0 * 40) + r0_0)])
            block_reduce max p0 via sh0
            acc0 = max(acc0, p0)
            let acc1: f32 = 0.0
            let p1: f32 = 0.0
            thread for r1_0 in [0, 40):
              p1 = (p1 + exp((in0[((i0 * 40) + r1_0)] - acc0)))
            block_reduce add p1 via sh1
            acc1 = (acc1 + p1)
            thread for j0 in [0, 40):
              out0[((i0 * 40) + j0)] = (exp((in0[((i0 * 40) + j0)] - acc0)) / acc1)""")


def test_softmax_over_many_short_rows_is_one_thread_per_row():
    got = mapped_text(lowered(lambda a: nnjit.softmax(a, axis=-1), zeros(64, 8)))
    assert got.startswith(expect("""
        kernel k0_fusion(reads in0; writes out0) on grid (4,) x block (8,):
          grid for i0 in [0, 64):
            let acc0: f32 = -inf
            reduce for r0_0 in [0, 8):"""))


def test_column_sum_steps_through_rows_with_columns_split_over_the_block():
    got = mapped_text(lowered(lambda a: a.sum(axis=0), zeros(6, 40)))
    assert got == expect("""
        kernel k0_sum(reads colacc1, in0; writes colacc1, out0) on grid (1,) x block (8,):
          block for ch in [0, 1):
            thread for j in [0, 40):
              colacc1[((ch * 40) + j)] = 0.0
            barrier
            for r in [0, 6):
              thread for j in [0, 40):
                colacc1[((ch * 40) + j)] = ADD
              barrier
            barrier
            thread for j in [0, 40):
              out0[((ch * 40) + j)] = colacc1[((ch * 40) + j)]""").replace(
        "ADD", "(colacc1[((ch * 40) + j)] + in0[((r * 40) + ((ch * 40) + j))])")


def test_scatter_add_runs_grid_wide_with_atomic_adds():
    idx = np.array([0, 2, 2, 1], np.int64)
    p = lowered(nnjit.grad(lambda t: (nnjit.take(t, idx, axis=0) ** 2).sum()), zeros(3, 4))
    got = mapped_text(p).split("\n")
    assert got[-5:] == expect("""
        kernel k1_scatter_add_1(reads out0, c1, t3; writes out0) on grid (2,) x block (8,):
          grid for f0 in [0, 16):
            let u0: i64 = (f0 / 4)
            let u1: i64 = (f0 % 4)""").split("\n") + [
        "    atomic out0[((min(max(where((c1[u0] < 0), (c1[u0] + 3), c1[u0]), 0), 2) * 4) + u1)]"
        " += t3[((u0 * 4) + u1)]"]


def test_full_sum_cascades_each_threads_share_then_reduces_in_a_tree():
    got = mapped_text(lowered(lambda a: a.sum(), zeros(1000)))
    assert got == expect("""
        kernel k0_sum(reads in0; writes out0) on grid (1,) x block (8,), shared 32B:
          sh0: f32[8] shared @ smem+0
          block for row0 in [0, 1):
            let acc0: f32 = 0.0
            let p0: f32 = 0.0
            let q0: f32 = 0.0
            let q1: f32 = 0.0
            let q2: f32 = 0.0
            let c0: i64 = 0
            let c1: i64 = 0
            let c2: i64 = 0
            thread for r0_0 in [0, 1000):
              q0 = (q0 + in0[r0_0])
              c0 = (c0 + 1)
              if (c0 == 32):
                q1 = (q1 + q0)
                q0 = 0.0
                c0 = 0
                c1 = (c1 + 1)
                if (c1 == 32):
                  q2 = (q2 + q1)
                  q1 = 0.0
                  c1 = 0
                  c2 = (c2 + 1)
                  if (c2 == 32):
                    p0 = (p0 + q2)
                    q2 = 0.0
                    c2 = 0
            q1 = (q1 + q0)
            q2 = (q2 + q1)
            p0 = (p0 + q2)
            block_reduce add p0 via sh0
            acc0 = (acc0 + p0)
            thread for t0 in [0, 1):
              out0[0] = acc0""")


def test_a_short_full_sum_is_not_cascaded():
    got = mapped_text(lowered(lambda a: a.sum(), zeros(100)))
    assert "thread for r0_0 in [0, 100):\n      p0 = (p0 + in0[r0_0])\n" in got
    assert "if " not in got


# -- launch plans ---------------------------------------------------------------------------------
def _gpu_kernels(p: Program) -> list[GpuKernel]:
    out = []
    for k in p.kernels:
        out += _gpu_kernels(k.body) if isinstance(k, ScanKernel) else [k]
    return out


def test_gemm_launch_plans():
    p = lowered(lambda a, b: a @ b, zeros(9, 6), zeros(6, 5))
    [simple] = map_to_gpu(p, SMALL).kernels
    assert simple.tiles is None and simple.grid == (4,) and simple.block == (8,)
    assert simple.params == ("in0", "in1", "out0") and not simple.shared
    [tiled] = map_to_gpu(p, FORCED).kernels
    t = FORCED.gemm_small       # 9 x 5 is smaller than the large tiles
    assert tiled.tiles == t and tiled.block == (t.tx, t.ty)
    assert tiled.grid == (-(-5 // t.bn), -(-9 // t.bm), 1)
    assert tiled.shared_bytes == t.bk * (t.bm + 1 + t.bn) * 4
    assert "tiles tx=2 ty=2 tm=2 tn=2 bk=4" in str(map_to_gpu(p, FORCED))


def test_segments_empty_loops_copies_and_unique_names_in_scan_bodies():
    n = Var("i")
    bufs = (Buffer("x", F32, 4, BufKind.INPUT, index=0), Buffer("y", F32, 4, BufKind.OUTPUT,
                                                                  index=0))
    body = (Loop("i", 4, (Store("y", n, Load("x", n, F32)),), LoopKind.PARALLEL),
            Loop("i", 0, (Store("y", n, Load("x", n, F32)),), LoopKind.PARALLEL),
            Loop("i", 4, (Store("y", n, Load("y", n, F32)),), LoopKind.PARALLEL))
    p = Program("p", bufs, (LoopKernel("k a", body, ("x",), ("y",)),
                            CopyKernel("k_a", "x", "y", 4, F32),
                            CopyKernel("empty", "x", "y", 0, F32)), ("x",), ("y",), 0)
    before = str(p)
    m = map_to_gpu(p, SMALL)
    assert str(p) == before                                  # pure
    assert [k.name for k in m.kernels] == ["k_a", "k_a_2", "k_a_3"]
    assert all(k.body[0].kind == LoopKind.GRID for k in m.kernels)
    xs = np.arange(4, dtype=np.float32)
    assert_close(run_program(m, [xs])[0], xs)

    def rnn(h, xs):
        return nnjit.scan(lambda h, x: (nnjit.tanh(h + x), h.sum()), h, xs)

    names = [k.name for k in _gpu_kernels(map_to_gpu(lowered(rnn, zeros(3), zeros(4, 3))))]
    assert len(names) == len(set(names)) and all(re.fullmatch(r"\w+", n) for n in names)


# -- the mapped programs compute what the unmapped ones do --------------------------------------
def _rows(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CASES = [
    ("softmax", lambda a: nnjit.softmax(a, axis=-1), (_rows(3, 40),)),
    ("row stats", lambda a: (a.sum(axis=1), a.max(axis=1), nnjit.argmax(a, axis=1),
                             nnjit.logsumexp(a, axis=1)), (_rows(4, 21),)),
    ("column sums", lambda a: ((nnjit.relu(a) * 2.0).sum(axis=0), a.sum(axis=(0, 2))),
     (_rows(5, 3, 7),)),
    ("full sum", lambda a: (a.sum(), (a * a).mean(), a.min()), (_rows(700),)),
    ("scatter-add", nnjit.grad(lambda t: (nnjit.take(t, np.array([0, 4, 4, 1]), axis=0)
                                          ** 2).sum()), (_rows(5, 3),)),
    ("pool grad", nnjit.grad(lambda a: (nnjit.max_pool2d(a, 3, 2, 1) ** 2).sum()),
     (_rows(2, 2, 5, 5),)),
    ("conv", lambda x, w: nnjit.relu(nnjit.conv2d(x, w, padding=1)),
     (_rows(1, 2, 4, 4), _rows(3, 2, 3, 3, seed=1))),
    ("scan", lambda h, xs: nnjit.scan(lambda h, x: (nnjit.tanh(h * 0.5 + x), h.sum()), h, xs),
     (np.zeros(3, np.float32), _rows(4, 3))),
]


@pytest.mark.parametrize("target", [SIM_TARGET, SMALL, FORCED], ids=["sim", "small", "forced"])
@pytest.mark.parametrize("name,fn,args", CASES, ids=[c[0] for c in CASES])
def test_mapped_programs_match_the_unmapped_ones(name, fn, args, target):
    p = lowered(fn, *args)
    want = run_program(p, list(args))
    got = run_program(map_to_gpu(inline_operands(p), target), list(args))
    for g, w in zip(got, want):
        assert_close(g, w, rtol=1e-5, atol=1e-5)
