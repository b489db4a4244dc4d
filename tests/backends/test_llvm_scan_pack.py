"""`pack_scan_operands`: a scan's loop-invariant GEMM operands packed once per call. The pack
kernels write exactly `Panels.pack` of the operand (kernel-IR interpreter and LLVM, across
K-blocks, partial panels, transposed and offset views); on whole programs the body's GEMM
calls the prepacked entry on a packed const input, the pack runs once before the loop, and
results equal the unpacked build bit for bit (f32 and f64, forward and gradient, 1 and 2
threads) and the interpreter; operands that vary per batch or step, and one-step scans, are
left alone."""
from __future__ import annotations

import re

import numpy as np
import pytest

import nnjit
from nnjit import nn
from nnjit.backends.llvm import gemm
from nnjit.backends.llvm.executable import compile_program
from nnjit.backends.llvm.scan_pack import PackOperand, pack_kernels
from nnjit.ir import DType
from nnjit.ir.kernel import Buffer, BufKind, GemmKernel, Program, ScanKernel
from nnjit.ir.kernel_eval import run_program
from nnjit.ir.kernel_verify import verify_program
from tests.gradcheck import check_grads
from tests.helpers import assert_close

RNG = np.random.default_rng(14)
DTYPES = {"f32": (np.float32, DType.F32), "f64": (np.float64, DType.F64)}


# --- the pack kernels -------------------------------------------------------------------------
def _pack_program(op: PackOperand, size: int) -> Program:
    bufs = (Buffer("x", op.dtype, size, BufKind.INPUT, index=0),
            Buffer("dst", op.dtype, op.panels.size(op.k, op.w), BufKind.OUTPUT, index=0))
    return verify_program(Program("pack", bufs, tuple(pack_kernels("pack", op, "dst")),
                                  ("x",), ("dst",), 0))


@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("which", ["a", "b"])
@pytest.mark.parametrize("k,w", [(1, 1), (7, 13), (256, 64), (300, 100), (600, 6), (32, 129)])
@pytest.mark.parametrize("transposed", [False, True])
def test_pack_kernels_write_the_panels(dt, which, k, w, transposed):
    """X[k, w] at x[offset + k * ks + w * ws], row-major or transposed, packed as the GEMM
    packs it: the interpreter and the LLVM build (1 and 2 threads) both give `Panels.pack`."""
    np_dt, dtype = DTYPES[dt]
    offset = 5
    ks, ws = (1, k) if transposed else (w, 1)
    x = RNG.standard_normal(offset + k * w + 3).astype(np_dt)
    panels = gemm.panels(np_dt, which)
    op = PackOperand("x", dtype, offset, ks, ws, k, w, panels)
    matrix = x[offset + np.arange(k)[:, None] * ks + np.arange(w)[None, :] * ws]
    want = panels.pack(matrix)
    p = _pack_program(op, x.size)
    np.testing.assert_array_equal(run_program(p, [x])[0], want)
    for nthreads in (1, 2):
        np.testing.assert_array_equal(compile_program(p, nthreads=nthreads)([x])[0], want)


# --- whole programs ---------------------------------------------------------------------------
def _rnn(h0, xs, w):
    """h_t = tanh(h_{t-1} @ w + x_t): w is a scan const, B of the body's GEMM."""
    def step(h, x):
        h = nnjit.tanh(h @ w + x)
        return h, h
    hT, hs = nnjit.scan(step, h0, xs)
    return hT, hs


def _rnn_columns(h0, xs, w):
    """h_t = tanh(w @ h_{t-1} + x_t) with batch in columns: w is A of the body's GEMM."""
    def step(h, x):
        h = nnjit.tanh(w @ h + x)
        return h, h
    return nnjit.scan(step, h0, xs)


def _rnn_args(dt, t=5, b=3, h=70, columns=False):
    np_dt = DTYPES[dt][0]
    shape = (h, b) if columns else (b, h)
    h0 = RNG.standard_normal(shape).astype(np_dt)
    xs = RNG.standard_normal((t, *shape)).astype(np_dt)
    w = (RNG.standard_normal((h, h)) / np.sqrt(h)).astype(np_dt)
    return h0, xs, w


def _functions(text: str) -> dict[str, str]:
    """LLVM function name -> its body text."""
    out = {}
    for m in re.finditer(r'^define [^@]*@"?([^"(]+)"?\((.*?)^}', text, re.S | re.M):
        out[m.group(1)] = m.group(0)
    return out


def _scans(p: Program):
    for k in p.kernels:
        if isinstance(k, ScanKernel):
            yield k
            yield from _scans(k.body)


def _packed_gemms(p: Program) -> list[tuple[str | None, str | None]]:
    """(A's, B's) packed body input for every GEMM of every scan body."""
    return [(k.a.buf if k.a_packed else None, k.b.buf if k.b_packed else None)
            for s in _scans(p) for k in s.body.kernels if isinstance(k, GemmKernel)]


def _unpacked(monkeypatch, fn, args):
    with monkeypatch.context() as m:
        m.setenv("NNJIT_PREPACK", "0")
        cf = nnjit.jit(fn, backend="llvm").lower(*args)
        assert not any(a or b for a, b in _packed_gemms(cf.program))
        return cf(*args)


@pytest.mark.parametrize("dt", list(DTYPES))
def test_rnn_weight_is_packed_once_and_results_are_unchanged(monkeypatch, dt):
    args = _rnn_args(dt)
    cf = nnjit.jit(_rnn, backend="llvm").lower(*args)
    assert _packed_gemms(cf.program) == [(None, "in2p")]
    assert "pack_scan_operands" in cf.stages()
    funcs = _functions(cf.llvm_ir())
    (body,) = [f for name, f in funcs.items() if name.endswith("_scan.body")]
    assert re.search(rf"call void @\"?nnjit_gemm_{dt}_prepacked\"?\(", body)
    assert not re.search(rf"@\"?nnjit_gemm_{dt}\"?\(", body)
    # The entry runs the pack kernel once, before the loop that calls the body.
    entry = funcs[cf.executable.rendered.entry]
    pack = entry.index("_scan_pack0_b0")
    loop = entry.index("_scan.body")
    assert pack < loop and entry.count("_scan_pack0_b0") == 1
    got = cf(*args)
    for g, u in zip(got, _unpacked(monkeypatch, _rnn, args)):
        np.testing.assert_array_equal(g, u)
    for g, want in zip(got, nnjit.jit(_rnn, backend="interp")(*args)):
        assert_close(g, want)


@pytest.mark.parametrize("dt", list(DTYPES))
def test_invariant_a_operand_is_packed(monkeypatch, dt):
    args = _rnn_args(dt, h=300, columns=True)          # K = 300: a full K-block and a tail
    cf = nnjit.jit(_rnn_columns, backend="llvm").lower(*args)
    assert _packed_gemms(cf.program) == [("in2p", None)]
    got = cf(*args)
    for g, u in zip(got, _unpacked(monkeypatch, _rnn_columns, args)):
        np.testing.assert_array_equal(g, u)
    for g, want in zip(got, nnjit.jit(_rnn_columns, backend="interp")(*args)):
        assert_close(g, want)


@pytest.mark.parametrize("nthreads", ["1", "2"])
@pytest.mark.parametrize("dt", list(DTYPES))
def test_lstm_gradient_packs_both_scans_bit_for_bit(monkeypatch, dt, nthreads):
    """An LSTM's loss and gradient: the forward scan packs W_hh^T (B), the backward scan
    W_hh read transposed; the values equal the unpacked build exactly."""
    monkeypatch.setenv("NNJIT_NUM_THREADS", nthreads)
    np_dt = DTYPES[dt][0]
    lstm = nn.LSTM(8, 40)
    params = {k: v.astype(np_dt) for k, v in lstm.init(seed=3).items()}
    xs = RNG.standard_normal((6, 4, 8)).astype(np_dt)

    def loss(p, xs):
        hs, _ = lstm.apply(p, xs)
        return (hs * hs).sum()

    fn = nnjit.value_and_grad(loss)
    cf = nnjit.jit(fn, backend="llvm").lower(params, xs)
    packed = [g for g in _packed_gemms(cf.program) if g != (None, None)]
    assert len(packed) >= 2 and all(b is not None for _, b in packed)
    got = nnjit.tree_leaves(cf(params, xs))
    want = nnjit.tree_leaves(_unpacked(monkeypatch, fn, (params, xs)))
    for g, u in zip(got, want):
        np.testing.assert_array_equal(g, u)
    for g, r in zip(got, nnjit.tree_leaves(nnjit.jit(fn, backend="interp")(params, xs))):
        assert_close(g, r, rtol=1e-4 if dt == "f32" else None, atol=1e-4 if dt == "f32" else None)


def test_rnn_gradient_against_finite_differences():
    h0, xs, w = _rnn_args("f64", t=4, b=2, h=9)
    check_grads(lambda w, h0, xs: _rnn(h0, xs, w), (w, h0, xs), argnums=(0, 1, 2),
                backend="llvm")


def test_per_batch_operands_and_one_step_scans_are_not_packed():
    """A batched GEMM whose const operand differs per batch (nonzero batch stride), and a
    scan of one step (packing would cost as much as the one GEMM's own packing)."""
    w = RNG.standard_normal((2, 6, 6)).astype(np.float32)
    h0 = RNG.standard_normal((2, 3, 6)).astype(np.float32)

    def batched(h0, xs, w):
        return nnjit.scan(lambda h, x: (nnjit.tanh(h @ w + x),) * 2, h0, xs)

    xs = RNG.standard_normal((4, 2, 3, 6)).astype(np.float32)
    cf = nnjit.jit(batched, backend="llvm").lower(h0, xs, w)
    assert not any(a or b for a, b in _packed_gemms(cf.program))
    for g, want in zip(cf(h0, xs, w), nnjit.jit(batched, backend="interp")(h0, xs, w)):
        assert_close(g, want)
    args = _rnn_args("f32", t=1)
    cf = nnjit.jit(_rnn, backend="llvm").lower(*args)
    assert not any(a or b for a, b in _packed_gemms(cf.program))


def test_packed_scratch_comes_from_the_memory_plan():
    """The panels are a planned temporary of the enclosing program, sized for the padded
    panels, read by the scan."""
    args = _rnn_args("f32", h=70)
    cf = nnjit.jit(_rnn, backend="llvm").lower(*args)
    p = cf.program
    (scan,) = [k for k in p.kernels if isinstance(k, ScanKernel)]
    (name,) = scan.const_bufs          # w itself is no longer read by the body: not a const
    packed = p.buffer(name)
    assert packed.kind == BufKind.TEMP
    nr = gemm.CONFIGS["f32"].nr
    assert packed.size == gemm.panels(np.float32, "b").size(70, 70) == 70 * (-(-70 // nr) * nr)
    assert packed.name in scan.reads
    assert packed.name in {b.name for b in p.plan.buffers}


def test_compiled_in_constant_weight_is_packed_at_compile_time():
    """`jit(..., constants=)`: the recurrent weight is a constant of the enclosing program,
    so its panels are a constant too (no pack kernel runs), and the unpacked copy is gone."""
    lstm = nn.LSTM(8, 40)
    params = lstm.init(seed=3)
    xs = RNG.standard_normal((6, 4, 8)).astype(np.float32)
    cf = nnjit.jit(lstm.apply, constants=params, backend="llvm").lower(xs)
    p = cf.program
    (scan,) = [k for k in p.kernels if isinstance(k, ScanKernel)]
    (name,) = scan.const_bufs
    assert p.buffer(name).kind == BufKind.CONST
    assert [b for a, b in _packed_gemms(p)] == [scan.body.inputs[-1]]
    assert not [k for k in p.kernels if "_pack" in k.name]
    assert len([b for b in p.buffers if b.kind == BufKind.CONST and b.size >= 160 * 40]) == 1
    want = nnjit.jit(lambda q, x: lstm.apply(q, x), backend="interp")(params, xs)
    as_arg = nnjit.jit(lambda q, x: lstm.apply(q, x), backend="llvm")(params, xs)
    for g, w, a in zip(nnjit.tree_leaves(cf(xs)), nnjit.tree_leaves(want),
                       nnjit.tree_leaves(as_arg)):
        assert_close(g, w)
        np.testing.assert_array_equal(g, a)


def _rnn_transposed(h0, xs, w):
    return _rnn(h0, xs, w.T)


def _rnn_transposed_kept(h0, xs, w):
    """w.T is materialized for the scan by a kernel that also computes other values (fused
    with a reduction over w): not a plain copy, so the pack reads the materialized w.T."""
    wt = w.T
    hT, hs = _rnn(h0, xs, wt)
    return hT, hs, (wt * wt).sum(axis=0) @ wt


@pytest.mark.parametrize("fn", [_rnn_transposed, _rnn_transposed_kept])
def test_pack_reads_through_a_materialized_transpose(monkeypatch, fn):
    """`h @ w.T` with w.T computed outside the scan by a transposing copy: the pack reads w
    itself and the copy is gone; the values equal the unpacked build either way."""
    args = _rnn_args("f32", h=70)
    cf = nnjit.jit(fn, backend="llvm").lower(*args)
    p = cf.program
    (pack,) = [k for k in p.kernels if "_scan_pack" in k.name]
    through = fn is _rnn_transposed
    assert (pack.reads == (p.inputs[2],)) == through    # w itself, not its copy
    if through:
        assert not [k for k in p.kernels if "transpose" in k.name]
    got = cf(*args)
    for g, u in zip(got, _unpacked(monkeypatch, fn, args)):
        np.testing.assert_array_equal(g, u)
    for g, want in zip(got, nnjit.jit(fn, backend="interp")(*args)):
        assert_close(g, want)
