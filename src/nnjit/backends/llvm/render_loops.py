"""Kernel-IR statements and scalar expressions -> LLVM IR: the KOp emitter table and the
statement renderer shared by loop kernels, GEMM epilogues and parallel chunks.

Scalars follow numpy: NaN propagates through MAX/MIN/RELU, NE is unordered, float->int casts
truncate and saturate (NaN -> 0), bool is i1 in registers and i8 in memory. Transcendentals come
from `mathlib` (inline, vectorizable; never libm). Identical expressions (structurally equal) are
rendered once per basic-block scope; a Store to a buffer or an Assign to an accumulator forgets
the cached values that depend on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import llvmlite.ir as ir

from ...codegen.analysis import facts
from ...ir import CompileError, DType
from ...ir.kernel import (
    COMPARE,
    Assign,
    Call,
    Const,
    Expr,
    KOp,
    Let,
    Load,
    Loop,
    LoopKind,
    Stmt,
    Store,
    Var,
)
from . import mathlib, special
from .helpers import F32, F64, I1, I8, I32, I64, alloca_once, for_range, gep, intrinsic
from .random import emit_philox_uniform

REG_TYPE = {DType.F32: F32, DType.F64: F64, DType.I32: I32, DType.I64: I64, DType.BOOL: I1}
MEM_TYPE = {**REG_TYPE, DType.BOOL: I8}

#: Innermost loops at least this long get `llvm.loop.vectorize.enable`; shorter ones are left
#: to the unroller.


# --- the op table -------------------------------------------------------------------------------
def _kind(dt: DType) -> str:
    return "f" if dt.is_float else ("b" if dt == DType.BOOL else "i")


def _arith(fop: str, iop: str, bop: str):
    def emit(b: ir.IRBuilder, call: Call, x, y):
        return getattr(b, {"f": fop, "i": iop, "b": bop}[_kind(call.args[0].dtype)])(x, y)
    return emit


def _div(b, call, x, y):
    if call.dtype.is_float:
        return b.fdiv(x, y)
    return _floor_divmod(b, x, y, call.args[1])[0]


def _mod(b, call, x, y):
    if call.dtype.is_float:  # numpy: the result takes the divisor's sign
        r = b.frem(x, y)
        zero = ir.Constant(x.type, 0.0)
        fix = b.and_(b.fcmp_ordered("!=", r, zero),
                     b.xor(b.fcmp_ordered("<", r, zero), b.fcmp_ordered("<", y, zero)))
        return b.select(fix, b.fadd(r, y), r)
    return _floor_divmod(b, x, y, call.args[1])[1]


def _floor_divmod(b: ir.IRBuilder, x, y, y_expr: Expr):
    """numpy floor_divide / remainder on ints: x // 0 == x % 0 == 0 and MIN // -1 wraps, where
    LLVM's sdiv would be undefined (and trap on x86). Constant positive divisors skip the guards."""
    ty = x.type
    zero, one, m1 = ir.Constant(ty, 0), ir.Constant(ty, 1), ir.Constant(ty, -1)
    guarded = not (isinstance(y_expr, Const) and int(y_expr.value) > 0)
    bad = b.or_(b.icmp_signed("==", y, zero), b.icmp_signed("==", y, m1)) if guarded else None
    d = b.select(bad, one, y) if guarded else y
    q, r = b.sdiv(x, d), b.srem(x, d)
    # Truncated -> floored: adjust when the remainder is nonzero and its sign differs from d's.
    fix = b.and_(b.icmp_signed("!=", r, zero), b.icmp_signed("<", b.xor(r, d), zero))
    q = b.select(fix, b.sub(q, one), q)
    r = b.select(fix, b.add(r, d), r)
    if guarded:
        is_m1 = b.icmp_signed("==", y, m1)
        q = b.select(bad, b.select(is_m1, b.sub(zero, x), zero), q)
        r = b.select(bad, zero, r)
    return q, r


def _neg(b, call, x):
    return b.fneg(x) if call.dtype.is_float else b.sub(ir.Constant(x.type, 0), x)


def _abs(b, call, x):
    if call.dtype.is_float:
        return b.call(intrinsic(b.module, "llvm.fabs", x.type, [x.type], [x.type]), [x])
    if call.dtype == DType.BOOL:
        return x
    zero = ir.Constant(x.type, 0)
    return b.select(b.icmp_signed("<", x, zero), b.sub(zero, x), x)


def _relu(b, call, x):
    # x < 0 ? 0 : x keeps NaN (unordered compare is false) and -0.0, exactly like np.maximum(x, 0).
    zero = ir.Constant(x.type, 0.0 if call.dtype.is_float else 0)
    neg = b.fcmp_ordered("<", x, zero) if call.dtype.is_float else b.icmp_signed("<", x, zero)
    return b.select(neg, zero, x)


def _minmax(fname: str, iname: str, bop: str):
    """numpy maximum/minimum: NaN propagates and a tie gives the second operand (numpy's
    maximum(0.0, -0.0) is -0.0, where llvm.maximum orders -0.0 below +0.0)."""
    sym = ">" if bop == "or_" else "<"

    def emit(b, call, x, y):
        kind = _kind(call.dtype)
        if kind == "b":
            return getattr(b, bop)(x, y)
        if kind == "i":
            return b.call(intrinsic(b.module, iname, x.type, [x.type, x.type], [x.type]), [x, y])
        first = b.or_(b.fcmp_ordered(sym, x, y), b.fcmp_unordered("uno", x, x))
        return b.select(first, x, y)
    return emit


def accumulate_minmax(b: ir.IRBuilder, op: KOp, acc: ir.Value, x: ir.Value) -> ir.Value:
    """A max/min accumulation step: llvm.maximum/minimum (NaN-propagating; signed zeros ordered,
    so the result does not depend on the order), which LLVM vectorizes as a reduction."""
    name = "llvm.maximum" if op == KOp.MAX else "llvm.minimum"
    return b.call(intrinsic(b.module, name, acc.type, [acc.type, acc.type], [acc.type]),
                  [acc, x])


_CMP = {KOp.LT: "<", KOp.LE: "<=", KOp.GT: ">", KOp.GE: ">=", KOp.EQ: "==", KOp.NE: "!="}


def _compare(op: KOp):
    def emit(b, call, x, y):
        kind, sym = _kind(call.args[0].dtype), _CMP[op]
        if kind == "f":  # ordered, except != which numpy makes true for NaN
            return (b.fcmp_unordered if op == KOp.NE else b.fcmp_ordered)(sym, x, y)
        return (b.icmp_signed if kind == "i" else b.icmp_unsigned)(sym, x, y)
    return emit


def _not(b, call, x):
    return b.xor(x, ir.Constant(x.type, -1 if call.dtype != DType.BOOL else 1))


def _isnan(b, call, x):
    if not call.args[0].dtype.is_float:
        return ir.Constant(I1, 0)
    return b.fcmp_unordered("uno", x, x)


def _pow(b, call, x, y):
    ey = call.args[1]
    return mathlib.emit_pow(b, x, float(ey.value) if isinstance(ey, Const) else y)


def _rand(b, call, seed, index):
    return emit_philox_uniform(b, _widen(b, seed, call.args[0].dtype),
                               _widen(b, index, call.args[1].dtype), call.salt, call.dtype.np)


def _widen(b: ir.IRBuilder, v: ir.Value, dt: DType) -> ir.Value:
    if dt == DType.BOOL:
        return b.zext(v, I64)
    return b.sext(v, I64) if dt == DType.I32 else v


def cast(b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType) -> ir.Value:
    """numpy `astype`: float->int truncates toward zero and saturates (NaN -> 0, via
    llvm.fptosi.sat), anything->bool is `!= 0` (NaN -> true), bool->number is 0/1."""
    if src == dst:
        return v
    ty = REG_TYPE[dst]
    s, d = _kind(src), _kind(dst)
    if d == "b":
        if s == "f":
            return b.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0))
        return b.icmp_signed("!=", v, ir.Constant(v.type, 0))
    if s == "b":
        return b.uitofp(v, ty) if d == "f" else b.zext(v, ty)
    if s == "f" and d == "f":
        return b.fpext(v, ty) if dst == DType.F64 else b.fptrunc(v, ty)
    if s == "f":
        fn = intrinsic(b.module, "llvm.fptosi.sat", ty, [v.type], [ty, v.type])
        return b.call(fn, [v])
    if d == "f":
        return b.sitofp(v, ty)
    return b.sext(v, ty) if ty.width > v.type.width else b.trunc(v, ty)


def _unary_math(fn: Callable):
    def emit(b, call, x):
        if not call.dtype.is_float:
            raise CompileError(f"{call.op.value} needs a float operand, got {call.dtype}")
        return fn(b, x)
    return emit


def _rounding(name: str):
    """floor, ceil, rint: one intrinsic (vrndscale), exact, keeps -0.0, inf and nan."""
    return _unary_math(lambda b, x: b.call(intrinsic(b.module, f"llvm.{name}", x.type, [x.type],
                                                     [x.type]), [x]))


#: KOp -> emitter(builder, call, *rendered args). One line per op.
EMITTERS: dict[KOp, Callable] = {
    KOp.ADD: _arith("fadd", "add", "or_"),
    KOp.SUB: _arith("fsub", "sub", "xor"),
    KOp.MUL: _arith("fmul", "mul", "and_"),
    KOp.DIV: _div,
    KOp.MOD: _mod,
    KOp.NEG: _neg,
    KOp.ABS: _abs,
    KOp.EXP: _unary_math(mathlib.emit_exp),
    KOp.LOG: _unary_math(mathlib.emit_log),
    KOp.SQRT: _unary_math(mathlib.emit_sqrt),
    KOp.TANH: _unary_math(mathlib.emit_tanh),
    KOp.SIGMOID: _unary_math(mathlib.emit_sigmoid),
    KOp.RELU: _relu,
    KOp.POW: _pow,
    KOp.MAX: _minmax("llvm.maximum", "llvm.smax", "or_"),
    KOp.MIN: _minmax("llvm.minimum", "llvm.smin", "and_"),
    **{op: _compare(op) for op in COMPARE},
    KOp.AND: lambda b, call, x, y: b.and_(x, y),
    KOp.OR: lambda b, call, x, y: b.or_(x, y),
    KOp.NOT: _not,
    KOp.ISNAN: _isnan,
    KOp.WHERE: lambda b, call, c, x, y: b.select(c, x, y),
    KOp.CAST: lambda b, call, x: cast(b, x, call.args[0].dtype, call.dtype),
    KOp.RAND: _rand,
    # -- math functions (issue 12) --
    KOp.SIN: _unary_math(special.emit_sin),
    KOp.COS: _unary_math(special.emit_cos),
    KOp.ERF: _unary_math(special.emit_erf),
    KOp.EXPM1: _unary_math(mathlib.emit_expm1),
    KOp.LOG1P: _unary_math(mathlib.emit_log1p),
    KOp.FLOOR: _rounding("floor"),
    KOp.CEIL: _rounding("ceil"),
    KOp.ROUND: _rounding("rint"),     # the default rounding mode: to nearest, ties to even
}

#: Float accumulations that may be reassociated inside REDUCE loops (so they vectorize).
_REASSOC = {"fadd", "fmul"}


# --- statements ---------------------------------------------------------------------------------
@dataclass
class BufRef:
    """A buffer as the renderer sees it: its address and its element type / size."""

    ptr: ir.Value
    dtype: DType
    size: int
    name: str


@dataclass
class _Scope:
    env: dict[str, tuple[str, ir.Value]] = field(default_factory=dict)  # ("ssa"|"slot", value)
    cache: dict[int, ir.Value] = field(default_factory=dict)            # canonical expr -> value


class StmtRenderer:
    """Renders statement lists at `builder`'s position. `bufs` maps buffer names to `BufRef`s;
    `bindings` are SSA values for free Vars (loop indices of an outer function, GEMM epilogue
    "acc"/"row"/"col"); `bounds` adds a trap on every out-of-range load/store."""

    def __init__(self, builder: ir.IRBuilder, bufs: dict[str, BufRef],
                 bindings: dict[str, ir.Value] | None = None, bounds: bool = False,
                 where: str = "kernel"):
        self.b = builder
        self.bufs = bufs
        self.bounds = bounds
        self.where = where
        self.scopes = [_Scope(env={k: ("ssa", v) for k, v in (bindings or {}).items()})]
        self._canon: dict[int, int] = {}
        self._keys: dict[tuple, int] = {}
        self._deps: dict[int, frozenset] = {}
        self._keep: list[Expr] = []  # keeps id()s of memoized expressions valid
        self.assigned: set[str] = set()
        self.reduce_depth = 0

    # -- statements ----------------------------------------------------------------------------
    def stmts(self, stmts: tuple[Stmt, ...], loop_range: tuple[ir.Value, ir.Value] | None = None):
        """Render `stmts`; `loop_range` replaces [0, extent) of the first (top) loop (a chunk
        of a parallel loop)."""
        self.assigned |= facts(stmts).assigned
        for s in stmts:
            if isinstance(s, Loop):
                self.loop(s, loop_range)
                loop_range = None
            elif isinstance(s, Store):
                self.store(s)
            elif isinstance(s, Let):
                self.let(s)
            elif isinstance(s, Assign):
                self.assign(s)
            else:
                raise CompileError(f"{self.where}: unknown statement {s!r}")

    def loop(self, s: Loop, loop_range=None) -> None:
        lo, hi = loop_range or (0, s.extent)
        reduce = s.kind == LoopKind.REDUCE
        # An innermost reduction loop is asked to vectorize: otherwise LLVM may unroll it
        # fully and vectorize the enclosing strided loop with gathers (a bias gradient ran
        # 10x slower). Other loops get no hint: forcing one LLVM cannot vectorize only makes
        # it print "loop not vectorized" warnings; its cost model handles them at O3.
        innermost = not any(isinstance(t, Loop) for t in s.body)
        vec = True if reduce and innermost and s.extent >= 8 else None
        # Four vector accumulators: the adds of one do not wait on another's latency, and a
        # lane sums a quarter as many terms (see lowering/accumulate.py for the error bound).
        inter = 4 if vec and s.extent >= 256 else None
        with for_range(self.b, lo, hi, vectorize=vec, unroll=False if vec else None,
                       name=s.var, interleave=inter) as i:
            self.scopes.append(_Scope(env={s.var: ("ssa", i)}))
            self.reduce_depth += reduce
            self.stmts(s.body)
            self.reduce_depth -= reduce
            self.scopes.pop()

    def store(self, s: Store) -> None:
        ref = self._buf(s.buf)
        val = self.expr(s.value)
        if ref.dtype == DType.BOOL:
            val = self.b.zext(val, I8)
        self.b.store(val, self._addr(ref, s.index), align=_align(ref.dtype))
        self._forget(("b", s.buf))

    def let(self, s: Let) -> None:
        val = self.expr(s.value)
        if s.var.name in self.assigned:  # an accumulator: a stack slot that mem2reg promotes
            slot = alloca_once(self.b, REG_TYPE[s.var.dtype], name=s.var.name)
            self.b.store(val, slot)
            self.scopes[-1].env[s.var.name] = ("slot", slot)
        else:
            self.scopes[-1].env[s.var.name] = ("ssa", val)
        self._forget(("v", s.var.name))

    def assign(self, s: Assign) -> None:
        kind, slot = self._lookup(s.var.name)
        if kind != "slot":
            raise CompileError(f"{self.where}: assignment to {s.var.name}, which is not an "
                               f"accumulator declared by an enclosing let")
        v = s.value
        if (isinstance(v, Call) and v.op in (KOp.MAX, KOp.MIN) and v.dtype.is_float
                and v.args[0] == s.var and self.reduce_depth):
            val = accumulate_minmax(self.b, v.op, self.expr(v.args[0]), self.expr(v.args[1]))
        else:
            val = self.expr(s.value)
        folds = ("v", s.var.name) in self._deps[self.canon(s.value)]
        if self.reduce_depth and folds and isinstance(val, ir.Instruction) \
                and val.opname in _REASSOC:
            # NOTE: reassoc alone (no nsz, nnan, ninf): with nsz LLVM folds acc + (x - x) to
            # acc, which is wrong for x = inf or NaN.
            val.flags.extend(f for f in ("reassoc",) if f not in val.flags)
        self.b.store(val, slot)
        self._forget(("v", s.var.name))

    # -- expressions ---------------------------------------------------------------------------
    def expr(self, e: Expr) -> ir.Value:
        c = self.canon(e)
        for scope in reversed(self.scopes):
            if c in scope.cache:
                return scope.cache[c]
        val = self._render(e)
        self.scopes[-1].cache[c] = val
        return val

    def _render(self, e: Expr) -> ir.Value:
        if isinstance(e, Const):
            return _const(e)
        if isinstance(e, Var):
            kind, v = self._lookup(e.name)
            return self.b.load(v, typ=REG_TYPE[e.dtype]) if kind == "slot" else v
        if isinstance(e, Load):
            ref = self._buf(e.buf)
            val = self.b.load(self._addr(ref, e.index), typ=MEM_TYPE[ref.dtype],
                              align=_align(ref.dtype))
            return self.b.icmp_unsigned("!=", val, ir.Constant(I8, 0)) \
                if ref.dtype == DType.BOOL else val
        if isinstance(e, Call):
            emit = EMITTERS.get(e.op)
            if emit is None:
                raise CompileError(f"{self.where}: no LLVM emitter for {e.op}")
            try:
                return emit(self.b, e, *[self.expr(a) for a in e.args])
            except (TypeError, ValueError) as exc:
                raise CompileError(f"{self.where}: cannot render {e}: {exc}") from exc
        raise CompileError(f"{self.where}: unknown expression {e!r}")

    def _addr(self, ref: BufRef, index: Expr) -> ir.Value:
        idx = self.expr(index)
        if idx.type != I64:
            idx = _widen(self.b, idx, index.dtype)
        if self.bounds:
            self._check(ref, idx)
        return gep(self.b, ref.ptr, MEM_TYPE[ref.dtype], idx)

    def _check(self, ref: BufRef, idx: ir.Value) -> None:
        ok = self.b.icmp_unsigned("<", idx, ir.Constant(I64, ref.size))
        with self.b.if_then(self.b.not_(ok), likely=False):
            trap = intrinsic(self.b.module, "llvm.trap", ir.VoidType(), [])
            self.b.call(trap, [])
            self.b.unreachable()

    def _buf(self, name: str) -> BufRef:
        try:
            return self.bufs[name]
        except KeyError:
            raise CompileError(f"{self.where}: unknown buffer {name!r}") from None

    def _lookup(self, name: str) -> tuple[str, ir.Value]:
        for scope in reversed(self.scopes):
            if name in scope.env:
                return scope.env[name]
        raise CompileError(f"{self.where}: variable {name!r} is used before it is defined")

    # -- hash-consing and invalidation ---------------------------------------------------------
    def canon(self, e: Expr) -> int:
        """A small int per structurally distinct expression, computed in O(arity) per object
        (frozen dataclasses re-hash whole trees, which is exponential on shared DAGs)."""
        c = self._canon.get(id(e))
        if c is not None:
            return c
        if isinstance(e, Call):
            key = ("call", e.op, e.dtype, e.salt, tuple(self.canon(a) for a in e.args))
            deps = frozenset().union(*(self._deps[self.canon(a)] for a in e.args))
        elif isinstance(e, Load):
            key = ("load", e.buf, e.dtype, self.canon(e.index))
            deps = self._deps[self.canon(e.index)] | {("b", e.buf)}
        elif isinstance(e, Var):
            key, deps = ("var", e.name, e.dtype), frozenset({("v", e.name)})
        else:
            key, deps = ("const", e.dtype, repr(e.value)), frozenset()
        c = self._keys.setdefault(key, len(self._keys))
        self._deps[c] = deps
        self._canon[id(e)] = c
        self._keep.append(e)
        return c

    def _forget(self, dep: tuple[str, str]) -> None:
        for scope in self.scopes:
            stale = [c for c in scope.cache if dep in self._deps[c]]
            for c in stale:
                del scope.cache[c]


def _const(e: Const) -> ir.Constant:
    ty = REG_TYPE[e.dtype]
    if e.dtype.is_float:
        return ir.Constant(ty, float(e.value))
    return ir.Constant(ty, int(bool(e.value)) if e.dtype == DType.BOOL else int(e.value))


def _align(dt: DType) -> int:
    return dt.itemsize
