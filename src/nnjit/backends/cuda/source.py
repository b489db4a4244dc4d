"""Kernel-IR scalars -> Python source for Numba CUDA: the KOp template table, typed literals,
identifier sanitizing, and the device-function preamble (numpy-semantics math, saturating
casts, Philox-4x32-10) generated once per module.

Every value is typed explicitly (float constants are `float32(..)`, narrowing results are cast
back), so the text means the same to Numba's CUDA compiler and to its simulator.
"""
from __future__ import annotations

import math
import re
from typing import Iterable

from ...ir import CompileError, DType
from ...ir.kernel import COMPARE, Call, Const, KOp

NP_NAME = {DType.F32: "float32", DType.F64: "float64", DType.I32: "int32", DType.I64: "int64",
           DType.BOOL: "bool_"}


def sanitize(name: str) -> str:
    """`name` reduced to [A-Za-z0-9_] (our IR's names are already close to that)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def comment(text: str) -> str:
    """Text made safe for a `#` comment: non-printables (newlines included) escaped."""
    return text.encode("unicode_escape").decode("ascii")


class Namer:
    """Unique Python identifiers `<prefix><sanitized IR name>` for IR names."""

    def __init__(self, used: Iterable[str] = ()):
        self.used = set(used)

    def fresh(self, prefix: str, name: str = "") -> str:
        base = prefix + sanitize(name)
        out, n = (base, 1) if name else (f"{base}0", 1)
        while out in self.used:
            out, n = (f"{base}_{n}" if name else f"{base}{n}"), n + 1
        self.used.add(out)
        return out


# -- the op table -------------------------------------------------------------------------------
# {0},{1},{2}: the rendered operands; {T}: the result's numpy type name. Ops whose result type
# could widen (int32 arithmetic, math functions) are cast back to {T}.
_ARITH = {KOp.ADD: "+", KOp.SUB: "-", KOp.MUL: "*"}
_BOOL_ARITH = {KOp.ADD: "({0} or {1})", KOp.SUB: "({0} != {1})", KOp.MUL: "({0} and {1})"}
_CMP_SYM = {KOp.LT: "<", KOp.LE: "<=", KOp.GT: ">", KOp.GE: ">=", KOp.EQ: "==", KOp.NE: "!="}
_FLOAT_FN = {KOp.EXP: "_exp", KOp.LOG: "_log", KOp.SQRT: "_sqrt", KOp.TANH: "math.tanh",
             KOp.SIGMOID: "_sigmoid",
             # -- math functions (issue 12) --
             KOp.SIN: "_sin", KOp.COS: "_cos", KOp.ERF: "math.erf", KOp.EXPM1: "_expm1",
             KOp.LOG1P: "_log1p", KOp.FLOOR: "_floor", KOp.CEIL: "_ceil", KOp.ROUND: "_rint"}


def template(call: Call) -> str:
    """The source template of `call` (see the table comment above)."""
    op, dt = call.op, call.dtype
    arg = call.args[0].dtype if call.args else dt
    if op in _ARITH:
        if dt == DType.BOOL:
            return _BOOL_ARITH[op]
        return _typed(f"({{0}} {_ARITH[op]} {{1}})", dt)
    if op == KOp.DIV:
        return "({0} / {1})" if dt.is_float else _typed("({0} // {1})", dt)
    if op == KOp.MOD:
        return "({0} % {1})" if dt.is_float else _typed("({0} % {1})", dt)
    if op == KOp.NEG:
        return "{0}" if dt == DType.BOOL else _typed("(-{0})", dt)
    if op == KOp.ABS:
        return "{0}" if dt == DType.BOOL else _typed("abs({0})", dt)
    if op in _FLOAT_FN:
        if not dt.is_float:
            raise CompileError(f"{op.value} needs a float operand, got {dt.value}")
        return f"{{T}}({_FLOAT_FN[op]}({{0}}))"
    if op == KOp.POW:
        if not dt.is_float:
            raise CompileError(f"pow needs float operands, got {dt.value}")
        return "{T}({0} ** {1})"
    if op == KOp.RELU:
        return "({0} if not ({0} < 0) else {T}(0))" if dt != DType.BOOL else "{0}"
    if op in (KOp.MAX, KOp.MIN):
        if dt == DType.BOOL:
            return "({0} or {1})" if op == KOp.MAX else "({0} and {1})"
        if dt.is_float:
            return "_fmax({0}, {1})" if op == KOp.MAX else "_fmin({0}, {1})"
        return _typed(f"{op.value}({{0}}, {{1}})", dt)
    if op in COMPARE:
        return f"({{0}} {_CMP_SYM[op]} {{1}})"
    if op == KOp.AND:
        return "({0} and {1})"
    if op == KOp.OR:
        return "({0} or {1})"
    if op == KOp.NOT:
        return "(not {0})"
    if op == KOp.ISNAN:
        return "({0} != {0})" if arg.is_float else "False"
    if op == KOp.WHERE:
        return "({1} if {0} else {2})"
    if op == KOp.CAST:
        return _cast(arg, dt)
    if op == KOp.RAND:
        if not dt.is_float:
            raise CompileError(f"rand must produce a float, not {dt.value}")
        bits = 32 if dt == DType.F32 else 64
        return f"_rand{bits}(int64({{0}}), int64({{1}}), {call.salt & 0xFFFFFFFF})"
    raise CompileError(f"the CUDA backend has no template for {op.value}")


def _typed(text: str, dt: DType) -> str:
    # int64 and float results of typed operands keep their type; int32 arithmetic widens.
    return f"{{T}}({text})" if dt == DType.I32 else text


def _cast(src: DType, dst: DType) -> str:
    """numpy astype: float->int truncates and saturates (NaN -> 0), x->bool is x != 0."""
    if src == dst:
        return "{0}"
    if dst == DType.BOOL:
        return "({0} != 0)"
    if src == DType.BOOL:
        return "({T}(1) if {0} else {T}(0))"
    if src.is_float and not dst.is_float:
        return f"_f2i{8 * dst.itemsize}({{0}})"
    return "{T}({0})"


def literal(c: Const) -> str:
    """A typed constant: floats and int32 through their numpy type, int64 as a plain int."""
    if c.dtype == DType.BOOL:
        return "True" if c.value else "False"
    if c.dtype.is_float:
        v = float(c.value)
        if math.isnan(v):
            text = "math.nan"
        elif math.isinf(v):
            text = "math.inf" if v > 0 else "-math.inf"
        else:
            text = repr(v)
        return f"{NP_NAME[c.dtype]}({text})"
    if c.dtype == DType.I32:
        return f"int32({int(c.value)})"
    v = int(c.value)
    return str(v) if v >= 0 else f"({v})"


# -- the preamble -------------------------------------------------------------------------------
def _philox_lines() -> list[str]:
    """Philox-4x32-10 exactly as `nnjit.ir.philox`: counter (index lo, index hi, salt, 0), key
    (seed lo, seed hi); 32-bit words held in uint64 so the products keep their high halves."""
    out = ["@cuda.jit(device=True)", "def _philox(seed, index, salt):",
           "    m = uint64(0xFFFFFFFF)", "    s = uint64(seed)", "    i = uint64(index)",
           "    k0 = s & m", "    k1 = s >> uint64(32)",
           "    c0 = i & m", "    c1 = i >> uint64(32)", "    c2 = uint64(salt) & m",
           "    c3 = uint64(0)"]
    for r in range(10):
        if r:
            out += ["    k0 = (k0 + uint64(0x9E3779B9)) & m",
                    "    k1 = (k1 + uint64(0xBB67AE85)) & m"]
        out += ["    p0 = c0 * uint64(0xD2511F53)", "    p1 = c2 * uint64(0xCD9E8D57)",
                "    c0, c1, c2, c3 = ((p1 >> uint64(32)) ^ c1 ^ k0, p1 & m, "
                "(p0 >> uint64(32)) ^ c3 ^ k1, p0 & m)"]
    return out + ["    return c0, c1"]


PREAMBLE = """\
import math

from numba import cuda, float32, float64, int32, int64, uint64, bool_


@cuda.jit(device=True)
def _exp(x):
    if x > 709.0:
        return math.inf
    return math.exp(x)


@cuda.jit(device=True)
def _log(x):
    if x > 0:
        return math.log(x)
    if x == 0:
        return -math.inf
    return math.nan


@cuda.jit(device=True)
def _sqrt(x):
    if x >= 0:
        return math.sqrt(x)
    return math.nan


@cuda.jit(device=True)
def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


# -- math functions (issue 12): numpy's results where Python's math (the simulator) raises,
# and floor/ceil/rint as floats (math.floor is an int in numba), keeping -0.0, inf and nan.
@cuda.jit(device=True)
def _sin(x):
    if x - x == 0:
        return math.sin(x)
    return math.nan


@cuda.jit(device=True)
def _cos(x):
    if x - x == 0:
        return math.cos(x)
    return math.nan


@cuda.jit(device=True)
def _expm1(x):
    if x > 709.0:
        return math.inf
    return math.expm1(x)


@cuda.jit(device=True)
def _log1p(x):
    if x > -1.0:
        return math.log1p(x)
    if x == -1.0:
        return -math.inf
    return math.nan


@cuda.jit(device=True)
def _floor(x):
    if not (abs(x) < 4503599627370496.0):
        return x
    return math.copysign(float64(math.floor(x)), x)


@cuda.jit(device=True)
def _ceil(x):
    if not (abs(x) < 4503599627370496.0):
        return x
    return math.copysign(float64(math.ceil(x)), x)


@cuda.jit(device=True)
def _rint(x):
    if not (abs(x) < 4503599627370496.0):
        return x
    f = float64(math.floor(x))
    d = x - f
    if d > 0.5 or (d == 0.5 and f - 2.0 * math.floor(f * 0.5) != 0.0):
        f += 1.0
    return math.copysign(f, x)


@cuda.jit(device=True)
def _fmax(a, b):
    if a != a or b != b:
        return a if a != a else b
    return a if a > b else b


@cuda.jit(device=True)
def _fmin(a, b):
    if a != a or b != b:
        return a if a != a else b
    return a if a < b else b


@cuda.jit(device=True)
def _f2i32(x):
    if x != x:
        return int32(0)
    if x >= 2147483647.0:
        return int32(2147483647)
    if x <= -2147483648.0:
        return int32(-2147483648)
    return int32(x)


@cuda.jit(device=True)
def _f2i64(x):
    if x != x:
        return int64(0)
    if x >= 9.223372036854775807e18:
        return int64(9223372036854775807)
    if x <= -9.223372036854775808e18:
        return int64(-9223372036854775808)
    return int64(x)


""" + "\n".join(_philox_lines()) + """


@cuda.jit(device=True)
def _rand32(seed, index, salt):
    w0, w1 = _philox(seed, index, salt)
    return float32(w0 >> uint64(8)) * float32(5.9604644775390625e-08)


@cuda.jit(device=True)
def _rand64(seed, index, salt):
    w0, w1 = _philox(seed, index, salt)
    return float64((w0 << uint64(21)) ^ (w1 >> uint64(11))) * 1.1102230246251565e-16


@cuda.jit
def _copy(src, dst, n):
    i = cuda.grid(1)
    while i < n:
        dst[i] = src[i]
        i += cuda.gridsize(1)
"""
