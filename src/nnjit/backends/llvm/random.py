"""Philox-4x32-10 uniforms as straight-line LLVM integer IR, bit-identical to
`nnjit.ir.philox.uniform`, so dropout masks match the numpy interpreter element for element.

Every 32x32->64 product is `zext, mul, lshr/trunc`, a pattern LLVM lowers to `vpmuludq`, so a
loop drawing one number per element vectorizes like any elementwise kernel.
"""
from __future__ import annotations

import llvmlite.ir as ir
import numpy as np

from ...ir import philox

_MASK32 = 0xFFFFFFFF


def _like(ty: ir.Type, elem: ir.Type) -> ir.Type:
    return ir.VectorType(elem, ty.count) if isinstance(ty, ir.VectorType) else elem


def _k(ty: ir.Type, value: int | float) -> ir.Constant:
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [ir.Constant(ty.element, value)] * ty.count)
    return ir.Constant(ty, value)


def _splat(b: ir.IRBuilder, v: ir.Value, ty: ir.Type) -> ir.Value:
    """Broadcast scalar `v` to vector type `ty` (insertelement + shufflevector)."""
    if v.type == ty:
        return v
    undef = ir.Constant(ty, ir.Undefined)
    one = b.insert_element(undef, v, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), ty.count), [0] * ty.count)
    return b.shuffle_vector(one, undef, zeros)


def _is_f64(dtype) -> bool:
    """float32/float64 as a numpy dtype-like, an nnjit `DType` or an llvmlite float type."""
    if isinstance(dtype, ir.Type):
        dt = np.dtype(np.float64 if isinstance(dtype, ir.DoubleType) else
                      np.float32 if isinstance(dtype, ir.FloatType) else np.int8)
    else:
        dt = np.dtype(getattr(dtype, "np", dtype))
    if dt not in (np.float32, np.float64):
        raise TypeError(f"philox uniform: dtype must be float32 or float64, not {dtype}")
    return dt == np.float64


def _mulhilo(b: ir.IRBuilder, a: ir.Value, m: int) -> tuple[ir.Value, ir.Value]:
    """(hi, lo) 32-bit halves of the 64-bit product a * m."""
    t32, t64 = a.type, _like(a.type, ir.IntType(64))
    p = b.mul(b.zext(a, t64), _k(t64, m))
    return b.trunc(b.lshr(p, _k(t64, 32)), t32), b.trunc(p, t32)


def emit_philox4x32_10(b: ir.IRBuilder, ctr: list[ir.Value], key: list[ir.Value]) -> list[ir.Value]:
    """Ten Philox rounds on four i32 counter words and two i32 key words; returns four i32."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(philox.ROUNDS):
        if r:  # the key is bumped before every round but the first (i32 adds wrap)
            k0 = b.add(k0, _k(k0.type, philox.PHILOX_W0))
            k1 = b.add(k1, _k(k1.type, philox.PHILOX_W1))
        hi0, lo0 = _mulhilo(b, c0, philox.PHILOX_M0)
        hi1, lo1 = _mulhilo(b, c2, philox.PHILOX_M1)
        c0, c1, c2, c3 = b.xor(b.xor(hi1, c1), k0), lo1, b.xor(b.xor(hi0, c3), k1), lo0
    return [c0, c1, c2, c3]


def emit_philox_uniform(b: ir.IRBuilder, seed_i64: ir.Value, index_i64: ir.Value, salt: int,
                        dtype) -> ir.Value:
    """The [0, 1) float `philox.uniform(seed, shape, salt, dtype)` gives flat element `index`.

    `index_i64` is an i64 (or `<N x i64>`, with `seed_i64` either the same type or a scalar i64);
    `salt` is a compile-time int; the result is float/double (or a vector of them).

    >>> # u = emit_philox_uniform(b, seed, i, salt=3, dtype=np.float32)
    >>> # keep = b.fcmp_ordered("<", u, ir.Constant(ir.FloatType(), 1 - p))
    """
    f64 = _is_f64(dtype)
    ity = index_i64.type
    seed_i64 = _splat(b, seed_i64, ity) if isinstance(ity, ir.VectorType) else seed_i64
    t32, t64 = _like(ity, ir.IntType(32)), ity
    key = [b.trunc(seed_i64, t32), b.trunc(b.lshr(seed_i64, _k(t64, 32)), t32)]
    ctr = [b.trunc(index_i64, t32), b.trunc(b.lshr(index_i64, _k(t64, 32)), t32),
           _k(t32, int(salt) & _MASK32), _k(t32, 0)]
    w0, w1, _, _ = emit_philox4x32_10(b, ctr, key)
    if not f64:  # float32(w0 >> 8) * 2**-24; w0 >> 8 < 2**24 so sitofp is exact
        fty = _like(ity, ir.FloatType())
        return b.fmul(b.sitofp(b.lshr(w0, _k(t32, 8)), fty), _k(fty, 2.0**-24))
    fty = _like(ity, ir.DoubleType())
    bits = b.xor(b.shl(b.zext(w0, t64), _k(t64, 21)), b.lshr(b.zext(w1, t64), _k(t64, 11)))
    return b.fmul(b.sitofp(bits, fty), _k(fty, 2.0**-53))  # bits < 2**53: exact
