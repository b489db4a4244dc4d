"""Inline sin, cos and erf for the LLVM backend, in the style of `mathlib` (whose helpers they
use): straight-line IR, no libm call, no fast-math, vectorizable, nan and inf as numpy.

  sin, cos  x = r + n*pi/2: Cody-Waite with FMAs below 2**40, an exact integer Payne-Hanek
            reduction (i64 lanes) from there, so every finite float and double is reduced
            correctly; Taylor polynomials in double; float computes in double, rounds once.
  erf       x * P(x^2) below 0.75; 1 - exp(-x^2) * h(x) above, h fitted piecewise
            (tests/backends/fit_erf.py), x^2 carried as hi + lo into the exponential.
Max errors (measured against numpy / mpmath): sin, cos f32 0.5 ulp, f64 3.5e-16 relative;
erf f32 0.52 ulp, f64 2.2e-16 relative.
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction
from math import factorial

import llvmlite.ir as ir

from .mathlib import _F64, _cs, _eq, _exp_dd, _fma, _intrinsic, _k, _like, _lt, _poly

# --- sin, cos (issue 12) ---------------------------------------------------------------------
@functools.cache
def _pi_fraction(bits: int = 400) -> Fraction:
    """pi to `bits` bits (Machin: pi = 16 atan(1/5) - 4 atan(1/239)), in exact integers."""
    one = 1 << (bits + 16)

    def atan_inv(k: int) -> int:
        total, term, n, sign = 0, one // k, 1, 1
        while term:
            total += sign * (term // n)
            term //= k * k
            n, sign = n + 2, -sign
        return total

    return Fraction(16 * atan_inv(5) - 4 * atan_inv(239), one)


@functools.cache
def _half_pi_pieces() -> tuple[float, ...]:
    """pi/2 = P1 + P2 + P3 + P4 (+ ~2**-210), each piece the double nearest the remainder."""
    rest, out = _pi_fraction() / 2, []
    for _ in range(4):
        out.append(float(rest))
        rest -= Fraction(out[-1])
    return tuple(out)


# sin(r) = r + r^3 * S(r^2) and cos(r) = 1 + r^2 * C(r^2): Taylor terms, enough for |r| <= 1
# (f32, evaluated in double to ~2**-34) and |r| <= 0.8 (f64, below 2**-60 of the result).
_SIN_TERMS = {False: 6, True: 9}
_COS_TERMS = {False: 7, True: 10}


def _reduce(b: ir.IRBuilder, x: ir.Value, f64: bool):
    """(r, quadrant n as an i64) with x = r + n*pi/2, for double (vector) x (Cody-Waite).

    n = rint(x * 2/pi); r = x - n*(P1 + P2 + P3 [+ P4]) by FMAs. The first is exact (|r1| < 2
    and both terms are multiples of 2**-52, or x < 1 and n = 0), the next ones round once each
    relative to a result that already holds every significant bit, so r is right to a few
    2**-53 even where x is within 2**-60 of a multiple of pi/2, for any n below 2**50. n itself
    comes from a rounded product: for |x| < 2**40 (f64) or 2**50 (f32 in double) it is off by
    one at most where r is near +-pi/4, which keeps |r| <= 0.8 (f64) and <= 1 (f32) - the
    polynomials' ranges. Beyond 2**40 the callers use an exact integer reduction instead."""
    ty = x.type
    pieces = _half_pi_pieces() if f64 else _half_pi_pieces()[:3]
    n_f = _intrinsic(b, "rint", b.fmul(x, _k(ty, float(2 / _pi_fraction()))))
    r = x
    for p in pieces:
        r = _fma(b, b.fneg(n_f), _k(ty, p), r)
    # NOTE: fptosi of a value outside i64 (inf, nan, huge n) is poison: those lanes use 0 and
    # their result is nan or meaningless anyway.
    small = _lt(b, _intrinsic(b, "fabs", n_f), _k(ty, 2.0 ** 62))
    return r, b.fptosi(b.select(small, n_f, _k(ty, 0.0)), _like(ty, ir.IntType(64)))


def _sin_cos_poly(b: ir.IRBuilder, r: ir.Value, f64: bool):
    """(sin r, cos r) for double |r| <= 1 (f64: 0.8)."""
    ty = r.type
    z = b.fmul(r, r)
    s_coeffs = [float(Fraction((-1) ** k, factorial(2 * k + 1)))
                for k in range(1, _SIN_TERMS[f64] + 1)]
    c_coeffs = [float(Fraction((-1) ** k, factorial(2 * k))) for k in range(1, _COS_TERMS[f64] + 1)]
    sin_r = _fma(b, b.fmul(r, z), _poly(b, z, s_coeffs), r)
    cos_r = _fma(b, z, _poly(b, z, c_coeffs), _k(ty, 1.0))
    return sin_r, cos_r


@functools.cache
def _two_over_pi_words(count: int = 7) -> tuple[int, ...]:
    """The first 32*count bits of 2/pi after the binary point, as 32-bit words."""
    bits = (2 / _pi_fraction(32 * count + 64)) * (1 << (32 * count))
    v = bits.numerator // bits.denominator
    return tuple((v >> (32 * (count - 1 - j))) & 0xFFFFFFFF for j in range(count))


_PAYNE_HANEK_MIN = 2.0 ** 40   # |x| from here on is reduced exactly in integers


def _reduce_f32_large(b: ir.IRBuilder, x: ir.Value):
    """(r as double, n) with |x| = r + n*pi/2 for float |x| >= 2**40 (Payne-Hanek in i64).

    |x| = m * 2**k with m the 24-bit significand and k = e - 23 in [17, 104]. Only the bits of
    2/pi from 2**(1-k) down matter mod 4 (higher ones give multiples of 4 once times m * 2**k),
    so a 96-bit window of them, G, picked from 32-bit words by k, gives m*G = (|x| * 2/pi mod 4)
    * 2**94 exactly but for the window's truncation (< 2**-66 in units of pi/2). The window's
    words are selected (no table loads, so this vectorizes) and the 24x32-bit products fit i64.
    """
    i32, i64 = _like(x.type, ir.IntType(32)), _like(x.type, ir.IntType(64))
    dty = _like(x.type, _F64)
    bits = b.bitcast(_intrinsic(b, "fabs", x), i32)
    e = b.sub(b.lshr(bits, _k(i32, 23)), _k(i32, 127))
    m = b.zext(b.or_(b.and_(bits, _k(i32, 0x7FFFFF)), _k(i32, 0x800000)), i64)
    # k - 2 = 32*j + s: the window starts at bit s of word j (clamped: small lanes are unused).
    t = b.zext(b.select(b.icmp_signed("<", e, _k(i32, 40)), _k(i32, 40), e), i64)
    t = b.sub(t, _k(i64, 25))                                        # (e - 23) - 2
    j, s = b.lshr(t, _k(i64, 5)), b.and_(t, _k(i64, 31))
    words = _two_over_pi_words()

    def word(i: int) -> ir.Value:        # words[j + i], j in [0, 3]
        v = _k(i64, words[i + 3])
        for jj in (2, 1, 0):
            v = b.select(b.icmp_unsigned("==", j, _k(i64, jj)), _k(i64, words[i + jj]), v)
        return v

    mask = _k(i64, 0xFFFFFFFF)
    w = [word(i) for i in range(4)]
    g = [b.and_(b.or_(b.shl(w[i], s), b.lshr(w[i + 1], b.sub(_k(i64, 32), s))), mask)
         for i in range(3)]
    lo = b.mul(m, g[2])
    mid = b.add(b.mul(m, g[1]), b.lshr(lo, _k(i64, 32)))
    hi = b.add(b.mul(m, g[0]), b.lshr(mid, _k(i64, 32)))
    frac = b.or_(b.shl(b.and_(hi, mask), _k(i64, 32)), b.and_(mid, mask))   # (.. mod 4) * 2**62
    n = b.lshr(b.add(frac, _k(i64, 1 << 61)), _k(i64, 62))
    f = b.sub(frac, b.shl(n, _k(i64, 62)))                                   # signed, |f| <= 2**61
    r = b.fmul(b.sitofp(f, dty), _k(dty, float(_pi_fraction() / 2 / (1 << 62))))
    return r, n


_F64_WORDS = 37          # 2/pi to 1184 bits: the window of the largest double, 2**1023


@functools.cache
def _two_over_pi_table() -> tuple[int, ...]:
    """A zero word, then 2/pi's bits after the point in 32-bit words (bit p of this stream is
    2/pi's bit p - 31, 1-based), for the double reduction's table loads."""
    return (0,) + _two_over_pi_words(_F64_WORDS)


def _table_load(b: ir.IRBuilder, idx: ir.Value) -> ir.Value:
    """_two_over_pi_table()[idx] (idx in range, i64 or a vector of them: lane by lane)."""
    words = _two_over_pi_table()
    arr = ir.ArrayType(ir.IntType(64), len(words))
    g = b.module.globals.get("nnjit_two_over_pi")
    if g is None:
        g = ir.GlobalVariable(b.module, arr, "nnjit_two_over_pi")
        g.global_constant = True
        g.linkage = "internal"
        g.initializer = ir.Constant(arr, list(words))

    def one(i):
        ptr = b.gep(g, [ir.Constant(ir.IntType(64), 0), i], inbounds=True, source_etype=arr)
        return b.load(ptr, typ=ir.IntType(64), align=8)

    if not isinstance(idx.type, ir.VectorType):
        return one(idx)
    out = ir.Constant(idx.type, None)
    for lane in range(idx.type.count):
        lane_k = ir.Constant(ir.IntType(32), lane)
        out = b.insert_element(out, one(b.extract_element(idx, lane_k)), lane_k)
    return out


def _reduce_f64_large(b: ir.IRBuilder, x: ir.Value):
    """(r, n) with |x| = r + n*pi/2 for double |x| >= 2**40 (Payne-Hanek in i64 lanes).

    |x| = m * 2**k, m the 53-bit significand split in 32-bit limbs M0 + M1 * 2**32, k = e - 52
    in [-12, 971]. A 192-bit window G of 2/pi's bits from 2**(1-k) down (six words, loaded by
    k) gives m*G mod 2**192 = (|x| * 2/pi mod 4) * 2**190, its truncation below 2**-55 of the
    smallest reduced argument a double can have (~2**-61). The product is summed in 32-bit
    columns (each 32x32 product split in halves), so nothing overflows; the top 64 bits give
    the quadrant and the leading fraction, the next 64 the rest: r keeps 53 bits even there."""
    i64 = _like(x.type, ir.IntType(64))
    k64 = lambda v: _k(i64, v)  # noqa: E731
    mask = k64(0xFFFFFFFF)
    bits = b.bitcast(_intrinsic(b, "fabs", x), i64)
    e = b.lshr(bits, k64(52))                                       # biased exponent
    e = b.select(b.icmp_unsigned("<", e, k64(1063)), k64(1063), e)  # 2**40; unused lanes
    e = b.select(b.icmp_unsigned(">", e, k64(2046)), k64(2046), e)  # inf, nan: unused
    m = b.or_(b.and_(bits, k64((1 << 52) - 1)), k64(1 << 52))
    m0, m1 = b.and_(m, mask), b.lshr(m, k64(32))
    p0 = b.sub(e, k64(1023 + 52 - 30))                   # k + 30: bit of 2**1 in the table
    j, s = b.lshr(p0, k64(5)), b.and_(p0, k64(31))
    w = [_table_load(b, b.add(j, k64(i))) for i in range(7)]
    rs = b.sub(k64(32), s)
    g = [b.and_(b.or_(b.shl(w[i], s), b.lshr(w[i + 1], rs)), mask) for i in range(6)]
    g = g[::-1]                                          # g[0] least significant
    cols = [[] for _ in range(6)]
    for jj, mj in enumerate((m0, m1)):
        for i in range(6):
            c = i + jj
            if c < 6:
                prod = b.mul(mj, g[i])
                cols[c].append(b.and_(prod, mask))
                if c + 1 < 6:
                    cols[c + 1].append(b.lshr(prod, k64(32)))
    limbs, carry = [], k64(0)
    for col in cols:
        total = carry
        for t in col:
            total = b.add(total, t)
        limbs.append(b.and_(total, mask))
        carry = b.lshr(total, k64(32))
    top = b.or_(b.shl(limbs[5], k64(32)), limbs[4])       # floor((|x| 2/pi mod 4) * 2**62)
    low = b.or_(b.shl(limbs[3], k64(32)), limbs[2])
    n = b.lshr(b.add(top, k64(1 << 61)), k64(62))
    f = b.sub(top, b.shl(n, k64(62)))                    # signed, |f| <= 2**61
    frac = b.fadd(b.sitofp(f, x.type), b.fmul(b.uitofp(low, x.type), _k(x.type, 2.0 ** -64)))
    return b.fmul(frac, _k(x.type, float(_pi_fraction() / 2 / (1 << 62)))), n


def _sin_cos(b: ir.IRBuilder, x: ir.Value, shift: int) -> ir.Value:
    """sin(x + shift*pi/2): the quadrant (n + shift) mod 4 picks +-sin r or +-cos r. float
    computes in double and rounds once. |x| >= 2**40 is reduced by `_reduce_f32_large` or
    `_reduce_f64_large` (computed for every lane and selected: the code stays branch-free)."""
    c = _cs(x)
    xd = x if c.f64 else b.fpext(x, _like(x.type, _F64))
    r, n = _reduce(b, xd, c.f64)
    if not c.f64:
        r_big, n_big = _reduce_f32_large(b, x)
        neg_x = _lt(b, x, _k(x.type, 0.0))       # x = -(r + n*pi/2) = (-r) + (-n)*pi/2
        r_big = b.select(neg_x, b.fneg(r_big), r_big)
        n_big = b.select(neg_x, b.sub(_k(n.type, 0), n_big), n_big)
        # NOTE: nan and inf compare false here and keep the first reduction (and their nan).
        big = b.fcmp_ordered(">=", _intrinsic(b, "fabs", x), _k(x.type, _PAYNE_HANEK_MIN))
        big = b.and_(big, b.fcmp_ordered("<", _intrinsic(b, "fabs", x), _k(x.type, float("inf"))))
        r, n = b.select(big, r_big, r), b.select(big, n_big, n)
    else:
        r_big, n_big = _reduce_f64_large(b, x)
        neg_x = _lt(b, x, _k(x.type, 0.0))
        r_big = b.select(neg_x, b.fneg(r_big), r_big)
        n_big = b.select(neg_x, b.sub(_k(n.type, 0), n_big), n_big)
        ax = _intrinsic(b, "fabs", x)
        big = b.and_(b.fcmp_ordered(">=", ax, _k(x.type, _PAYNE_HANEK_MIN)),
                     b.fcmp_ordered("<", ax, _k(x.type, float("inf"))))
        r, n = b.select(big, r_big, r), b.select(big, n_big, n)
    sin_r, cos_r = _sin_cos_poly(b, r, c.f64)
    q = b.add(n, _k(n.type, shift))
    one, two = _k(n.type, 1), _k(n.type, 2)
    odd = b.icmp_signed("!=", b.and_(q, one), _k(n.type, 0))
    neg = b.icmp_signed("!=", b.and_(q, two), _k(n.type, 0))
    v = b.select(odd, cos_r, sin_r)
    v = b.select(neg, b.fneg(v), v)
    return v if c.f64 else b.fptrunc(v, x.type)


def emit_sin(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """sin(x); odd, sin(+-0) = +-0, sin(+-inf) = sin(nan) = nan. Max error f32 0.5 ulp
    (double inside), f64 1.6 ulp (3.5e-16 relative), for every finite x: exact reductions
    (Cody-Waite below 2**40, Payne-Hanek from there; see `_reduce`)."""
    res = _sin_cos(b, x, 0)
    return b.select(_eq(b, x, _k(x.type, 0.0)), x, res)     # keeps the sign of zero


def emit_cos(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """cos(x); cos(+-inf) = cos(nan) = nan; accuracy and range as `emit_sin`."""
    return _sin_cos(b, x, 1)


# --- erf (issue 12) --------------------------------------------------------------------------
# erfc(x) = exp(-x^2) * h(x) for 0.75 <= x < cutoff, h a polynomial in s = x - center per piece:
# (upper bound, center, coefficients as hex). Made by tests/backends/fit_erf.py (Chebyshev-node
# interpolation of h at 50 digits with mpmath, then rounded): each piece's error relative to h
# is below 0.05 ulp of erf, counted at erfc's largest value in the piece. The last upper bound
# is where erf rounds to 1 (f64: erfc < 2**-54 from 5.92; f32, in double: 2**-25 from 3.92).
_ERFC_PIECES = {
    True: (
        (1.617213, 1.1836067241913308, (
            "0x1.8758683791f3ap-2", "-0x1.ca1fe7b862668p-3", "0x1.e0e70f4716e14p-4",
            "-0x1.cebba49c3b74fp-5", "0x1.9e1c7d45ccf9ep-6", "-0x1.5c41c0abed96cp-7",
            "0x1.155954ec6fe64p-8", "-0x1.a4d8f925d2c0ep-10", "0x1.31a38f8ae234dp-11",
            "-0x1.aa9cbfb2c5612p-13", "0x1.1f0bb1012f219p-14", "-0x1.756fbb8917c95p-16",
            "0x1.d6cd96fa016c4p-18", "-0x1.202b04970dab4p-19", "0x1.567d6040aa53cp-21",
            "-0x1.8d6eb432fb045p-23", "0x1.e02c8dea8ddf2p-25", "-0x1.08c9f31feb076p-26",
        )),
        (3.482336, 2.54977471758278, (
            "0x1.a846f0ccd8312p-3", "-0x1.2698cb9776a8bp-4", "0x1.85982c6804bcdp-6",
            "-0x1.ed5bc0eb70672p-8", "0x1.2c6cc67a6edfdp-9", "-0x1.611f21537f447p-11",
            "0x1.91c23ed064d1ap-13", "-0x1.bb88a4af8ca87p-15", "0x1.dc1fcb020cb55p-17",
            "-0x1.f1e3ebf53227dp-19", "0x1.fbf9d0c9f4ebdp-21", "-0x1.fa630440cd080p-23",
            "0x1.ee4aa44fccb56p-25", "-0x1.d807ac789ea2ep-27", "0x1.b1798204fd759p-29",
            "-0x1.8ebe6c3cf8eb5p-31", "0x1.bae7d794a462cp-33", "-0x1.86455fabd1a06p-35",
        )),
        (5.95, 4.7161679933914495, (
            "0x1.dfa7a774d1fc1p-4", "-0x1.864cb3a272fb5p-6", "0x1.379aa9efd9eacp-8",
            "-0x1.e8a51849ba8a7p-11", "0x1.789a85442b71ap-13", "-0x1.1d86ab47922dfp-15",
            "0x1.aa33951f9ac0dp-18", "-0x1.395678972c6f4p-20", "0x1.c61adb1ea1da4p-23",
            "-0x1.44813fea2416ap-25", "0x1.c997556628efap-28", "-0x1.3e7b5f8899f72p-30",
            "0x1.b61f3065d5546p-33", "-0x1.297dafbb94635p-35", "0x1.88b3b749fbdb9p-38",
            "-0x1.04befa5fa09c1p-40", "0x1.a036c3e209869p-43", "-0x1.0d326fcff3098p-45",
        )),
    ),
    False: (
        (2.127495, 1.4387475360000006, (
            "0x1.53dde8154a194p-2", "-0x1.62fd863fc7a8cp-3", "0x1.51fbd583e33c5p-4",
            "-0x1.2a4661b30fdcep-5", "0x1.edbcb080e6b6bp-7", "-0x1.825760fb54ebcp-8",
            "0x1.1db124bf35c02p-9", "-0x1.977455d282820p-11", "0x1.3e192968064a9p-12",
            "-0x1.a0416e2f57c94p-14",
        )),
        (3.95, 3.0387475360000007, (
            "0x1.6a53f565ac999p-3", "-0x1.b37f1af30c850p-5", "0x1.f7ca8eacb5c4dp-7",
            "-0x1.197418fed24a0p-8", "0x1.30aad2b85f065p-10", "-0x1.4035918bfb560p-12",
            "0x1.45a2c1996862ap-14", "-0x1.44cf4b9dafd41p-16", "0x1.64fd06a5b9d8dp-18",
            "-0x1.521d97cf67badp-20",
        )),
    ),
}
_ERF_SMALL = 0.75                      # below: the Taylor series of erf(x)/x in x^2
_ERF_TAYLOR_TERMS = {True: 16, False: 11}   # last term < 2**-60 (f64), 2**-34 (f32) at 0.75


@functools.cache
def _erf_taylor(f64: bool) -> list[float]:
    """erf(x)/x = 2/sqrt(pi) * sum_n (-1)^n x^(2n) / (n! (2n+1)), rounded term by term."""
    scale = 1 << 200
    root_pi = Fraction(math.isqrt(int(_pi_fraction() * scale * scale)), scale)
    return [float(Fraction(2 * (-1) ** n, factorial(n) * (2 * n + 1)) / root_pi)
            for n in range(_ERF_TAYLOR_TERMS[f64])]


def _erf_double(b: ir.IRBuilder, x: ir.Value, f64: bool) -> ir.Value:
    """erf of double (vector) x with the f64 or f32 tables: x * P(x^2) below 0.75; above,
    1 - exp(-x^2) * h(|x|) with x^2 carried as hi + lo into the exponential, sign copied back."""
    ty = x.type
    ax = _intrinsic(b, "fabs", x)
    small = b.fmul(x, _poly(b, b.fmul(x, x), _erf_taylor(f64)))    # x * P keeps -0.0
    pieces = _ERFC_PIECES[f64]
    conds = [_lt(b, ax, _k(ty, upper)) for upper, _, _ in pieces[:-1]]

    def pick(values):
        v = _k(ty, values[-1])
        for cond, value in zip(reversed(conds), reversed(values[:-1])):
            v = b.select(cond, _k(ty, value), v)
        return v

    center = pick([c for _, c, _ in pieces])
    coeffs = [pick([float.fromhex(p[2][k]) for p in pieces]) for k in range(len(pieces[0][2]))]
    acc = coeffs[-1]
    s = b.fsub(ax, center)
    for c in reversed(coeffs[:-1]):
        acc = _fma(b, acc, s, c)
    sq = b.fmul(ax, ax)
    sq_lo = _fma(b, ax, ax, b.fneg(sq))
    erfc = b.fmul(_exp_dd(b, b.fneg(sq), b.fneg(sq_lo)), acc)
    mid = _intrinsic(b, "copysign", b.fsub(_k(ty, 1.0), erfc), x)
    res = b.select(_lt(b, ax, _k(ty, _ERF_SMALL)), small, mid)
    saturated = b.fcmp_ordered(">=", ax, _k(ty, pieces[-1][0]))     # inf too; nan is not
    return b.select(saturated, _intrinsic(b, "copysign", _k(ty, 1.0), x), res)


def emit_erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """The error function; odd, erf(+-0) = +-0, erf(+-inf) = +-1, nan stays nan. float computes
    in double (its own shorter tables) and rounds once. Max error f32 0.5 ulp, f64 2 ulp."""
    c = _cs(x)
    if c.f64:
        return _erf_double(b, x, True)
    return b.fptrunc(_erf_double(b, b.fpext(x, _like(x.type, _F64)), False), x.type)
