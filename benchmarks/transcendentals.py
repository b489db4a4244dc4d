"""Inline LLVM transcendentals vs numpy: one compiled `out[i] = f(in[i])` loop per function over
16M elements (memory-bound) or, with a small --n such as 65536, in cache (compute-bound); one
thread each, outputs preallocated and pre-touched (no page-fault cost).

    .venv/bin/python benchmarks/transcendentals.py [--n 16777216] [--repeat 9] [--dtype f32]

GB/s counts the bytes the loop must move: its inputs plus its output. The libm column is the
same loop calling the C library per element (what a backend without inline math emits).
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import llvmlite.ir as ir
import numpy as np

from nnjit.backends.llvm import mathlib, target
from nnjit.backends.llvm.random import emit_philox_uniform
from nnjit.ir import philox

I64, PTR = ir.IntType(64), ir.PointerType()


def map_loop_ir(emit, elem: ir.Type, arity: int) -> str:
    """`void f(T* noalias in0.., T* noalias out, i64 n) { for i < n: out[i] = emit(b, i, in..) }`"""
    mod = ir.Module(name="bench")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [PTR] * (arity + 1) + [I64]), "f")
    for arg in fn.args[:-1]:
        arg.add_attribute("noalias")
    n = fn.args[-1]
    entry, body, done = (fn.append_basic_block(s) for s in ("entry", "body", "done"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed(">", n, ir.Constant(I64, 0)), body, done)
    b.position_at_end(body)
    i = b.phi(I64)
    i.add_incoming(ir.Constant(I64, 0), entry)
    args = [b.load(b.gep(p, [i], inbounds=True, source_etype=elem), typ=elem)
            for p in fn.args[:arity]]
    b.store(emit(b, i, *args), b.gep(fn.args[arity], [i], inbounds=True, source_etype=elem))
    nxt = b.add(i, ir.Constant(I64, 1))
    i.add_incoming(nxt, body)
    b.cbranch(b.icmp_signed("<", nxt, n), body, done)
    b.position_at_end(done)
    b.ret_void()
    return str(mod)


def _fused(b, x):
    """tanh(x*1.5+0.5)*sigmoid(x)+relu(x-0.25), the chain PERF_NOTES measures the peers on."""
    ty = x.type
    k = lambda v: ir.Constant(ty, v)  # noqa: E731
    t = mathlib.emit_tanh(b, b.fadd(b.fmul(x, k(1.5)), k(0.5)))
    xm = b.fsub(x, k(0.25))
    relu = b.select(b.fcmp_ordered(">", xm, k(0.0)), xm, k(0.0))
    return b.fadd(b.fmul(t, mathlib.emit_sigmoid(b, x)), relu)


def _np_sigmoid(x, out):
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def _np_fused(x, out, tmp):
    np.multiply(x, 1.5, out=tmp)
    tmp += 0.5
    np.tanh(tmp, out=tmp)
    _np_sigmoid(x, out)
    out *= tmp
    np.subtract(x, 0.25, out=tmp)
    np.maximum(tmp, 0, out=tmp)
    out += tmp
    return out


def cases(dt):
    """name -> (emit(b, i, *args), numpy(out, *args), input generators)."""
    rng = np.random.default_rng(0)
    wide = lambda n: rng.uniform(-10, 10, n).astype(dt)  # noqa: E731
    pos = lambda n: np.exp(rng.uniform(-20, 20, n)).astype(dt)  # noqa: E731
    expo = lambda n: rng.uniform(-3, 3, n).astype(dt)  # noqa: E731
    seed, salt = 1234, 7
    un = lambda name: (lambda b, i, x: getattr(mathlib, f"emit_{name}")(b, x))  # noqa: E731
    return {
        "exp": (un("exp"), lambda o, x: np.exp(x, out=o), [wide]),
        "log": (un("log"), lambda o, x: np.log(x, out=o), [pos]),
        "tanh": (un("tanh"), lambda o, x: np.tanh(x, out=o), [wide]),
        "sigmoid": (un("sigmoid"), lambda o, x: _np_sigmoid(x, o), [wide]),
        "expm1": (un("expm1"), lambda o, x: np.expm1(x, out=o), [wide]),
        "log1p": (un("log1p"), lambda o, x: np.log1p(x, out=o), [pos]),
        "sqrt": (un("sqrt"), lambda o, x: np.sqrt(x, out=o), [pos]),
        "pow": (lambda b, i, x, y: mathlib.emit_pow(b, x, y),
                lambda o, x, y: np.power(x, y, out=o), [pos, expo]),
        "fused": (lambda b, i, x: _fused(b, x),
                  lambda o, x: _np_fused(x, o, np.empty_like(o)), [wide]),
        "philox": (lambda b, i, x: emit_philox_uniform(b, ir.Constant(I64, seed), i, salt, dt),
                   lambda o, x: o.__setitem__(..., philox.uniform(seed, o.shape, salt, dt)),
                   [wide]),
    }


_LIBM = {"exp": "exp", "log": "log", "tanh": "tanh", "expm1": "expm1", "log1p": "log1p",
         "pow": "pow"}


def libm_emit(name: str, elem: ir.Type):
    """An emitter calling libm's `name` (expf for float, exp for double) on each element."""
    cname = _LIBM[name] + ("f" if isinstance(elem, ir.FloatType) else "")

    def emit(b, i, *xs):
        fn = b.module.globals.get(cname) or ir.Function(
            b.module, ir.FunctionType(elem, [elem] * len(xs)), cname)
        return b.call(fn, list(xs))

    return emit


def median_time(fn, repeat: int, inner: int) -> float:
    """Median over `repeat` samples of the time per call, each sample `inner` calls long."""
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t) / inner)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    dt = np.float32 if args.dtype == "f32" else np.float64
    elem = ir.FloatType() if dt == np.float32 else ir.DoubleType()
    print(f"{args.n} x {np.dtype(dt).name}, 1 thread, median of {args.repeat} "
          f"({target.host_cpu()[0]})")
    print(f"{'function':9s} {'nnjit ms':>9s} {'GB/s':>6s} {'ns/elem':>7s} {'numpy ms':>9s} "
          f"{'GB/s':>6s} {'vs numpy':>8s} {'libm ms':>8s} {'vs libm':>7s}")
    for name, (emit, ref, gens) in cases(dt).items():
        if args.only and name not in args.only:
            continue
        xs = [g(args.n) for g in gens]
        lib = target.jit(map_loop_ir(emit, elem, len(xs)))
        fn = lib.function("f", None, *[ctypes.c_void_p] * (len(xs) + 1), ctypes.c_int64)
        out, out_np = np.ones_like(xs[0]), np.ones_like(xs[0])  # touched: no page faults
        ptrs = [x.ctypes.data for x in xs] + [out.ctypes.data]
        inner = max(1, (1 << 24) // args.n)  # small n: time many calls per sample
        t_jit = median_time(lambda: fn(*ptrs, args.n), args.repeat, inner)
        t_np = median_time(lambda: ref(out_np, *xs), args.repeat, inner)
        libm = ""
        if name in _LIBM:
            lib_c = target.jit(map_loop_ir(libm_emit(name, elem), elem, len(xs)))
            fn_c = lib_c.function("f", None, *[ctypes.c_void_p] * (len(xs) + 1), ctypes.c_int64)
            t_c = median_time(lambda: fn_c(*ptrs, args.n), max(3, args.repeat // 3), inner)
            libm = f"{t_c * 1e3:8.2f} {t_c / t_jit:6.1f}x"
        nbytes = (len(xs) + 1) * out.nbytes
        print(f"{name:9s} {t_jit * 1e3:9.3f} {nbytes / t_jit / 1e9:6.1f} "
              f"{t_jit / args.n * 1e9:7.3f} {t_np * 1e3:9.3f} {nbytes / t_np / 1e9:6.1f} "
              f"{t_np / t_jit:7.1f}x {libm}")


if __name__ == "__main__":
    main()
