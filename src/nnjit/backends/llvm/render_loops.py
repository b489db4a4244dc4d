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

from ...codegen.analysis import affine, facts, loads_of
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
from .helpers import (
    F32,
    AccessGroup,
    F64,
    I1,
    I8,
    I32,
    I64,
    alloca_once,
    as_i64,
    for_range,
    gep,
    imin,
    intrinsic,
    prefetch_range,
    tag_access,
)
from .random import emit_philox_uniform

REG_TYPE = {DType.F32: F32, DType.F64: F64, DType.I32: I32, DType.I64: I64, DType.BOOL: I1}
MEM_TYPE = {**REG_TYPE, DType.BOOL: I8}

#: Parallel innermost loops at least this long that read arrays front to back are rendered as
#: streams (see `StreamPlan`).
STREAM_MIN_EXTENT = 1024

#: The alignment a stream's vector loop is moved to: a cache line, also an AVX-512 vector.
VECTOR_ALIGN = 64

#: A stream runs in blocks of this many iterations; each block first prefetches its read
#: streams `PREFETCH_AHEAD` iterations ahead. Measured on the 16M-element chains (256/2048
#: against 512/2048, 1024/2048-8192 and 2048/4096): best or tied at both thread counts.
STREAM_BLOCK = 256
PREFETCH_AHEAD = 2048

#: At most this many read streams are prefetched (each costs a prefetch per cache line).
MAX_PREFETCH_STREAMS = 4

#: Reduction loops shorter than this are a window's taps: left to LLVM, which unrolls them
#: fully; longer innermost ones are asked to vectorize.
TAP_EXTENT = 8


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


def _taps_only(s: Loop) -> bool:
    """Whether every loop nested in `s` is a reduction short enough for LLVM to unroll fully
    (`TAP_EXTENT`), and there is at least one."""
    inner = [t for t in s.body if isinstance(t, Loop)]
    return bool(inner) and all(t.kind == LoopKind.REDUCE and t.extent < TAP_EXTENT
                               and (_taps_only(t) or not any(isinstance(u, Loop) for u in t.body))
                               for t in inner)


class StmtRenderer:
    """Renders statement lists at `builder`'s position. `bufs` maps buffer names to `BufRef`s;
    `bindings` are SSA values for free Vars (loop indices of an outer function, GEMM epilogue
    "acc"/"row"/"col"); `bounds` adds a trap on every out-of-range load/store; `access_group`
    tags every array load and store (see helpers.AccessGroup)."""

    def __init__(self, builder: ir.IRBuilder, bufs: dict[str, BufRef],
                 bindings: dict[str, ir.Value] | None = None, bounds: bool = False,
                 where: str = "kernel", access_group: AccessGroup | None = None):
        self.b = builder
        self.bufs = bufs
        self.bounds = bounds
        self.access_group = access_group
        self.where = where
        self.scopes = [_Scope(env={k: ("ssa", v) for k, v in (bindings or {}).items()})]
        self._canon: dict[int, int] = {}
        self._keys: dict[tuple, int] = {}
        self._deps: dict[int, frozenset] = {}
        self._keep: list[Expr] = []  # keeps id()s of memoized expressions valid
        self.assigned: set[str] = set()
        self.reduce_depth = 0

    # -- statements ----------------------------------------------------------------------------
    def stmts(self, stmts: tuple[Stmt, ...], loop_range: tuple[ir.Value, ir.Value] | None = None,
              stream: StreamPlan | None = None):
        """Render `stmts`; `loop_range` replaces [0, extent) of the first (top) loop (a chunk
        of a parallel loop), and `stream` (see `streaming_plan`) renders that loop as a
        stream."""
        self.assigned |= facts(stmts).assigned
        for s in stmts:
            if isinstance(s, Loop):
                if stream is not None:
                    self.stream_loop(s, loop_range or (0, s.extent), stream)
                else:
                    self.loop(s, loop_range)
                loop_range = stream = None
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
        vec = True if reduce and innermost and s.extent >= TAP_EXTENT else None
        # Four vector accumulators: the adds of one do not wait on another's latency, and a
        # lane sums a quarter as many terms (see lowering/accumulate.py for the error bound).
        inter = 4 if vec and s.extent >= 256 else None
        # A loop over window positions whose only inner loops are a window's few taps (a
        # pool, a direct conv): LLVM unrolls the taps, then, when this loop is short too,
        # unrolls it fully and vectorizes the enclosing loop over rows with gathers. Kept a
        # loop, it vectorizes with (masked) interleaved loads: a 2x2 stride-2 max pool over
        # 5-wide rows ran in 23 us instead of 70 (see target.py for the masked groups).
        unroll = False if vec or (not reduce and _taps_only(s)) else None
        with for_range(self.b, lo, hi, vectorize=vec, unroll=unroll,
                       name=s.var, interleave=inter) as i:
            self._loop_body(s, i)

    def _loop_body(self, s: Loop, i: ir.Value) -> None:
        reduce = s.kind == LoopKind.REDUCE
        self.scopes.append(_Scope(env={s.var: ("ssa", i)}))
        self.reduce_depth += reduce
        self.stmts(s.body)
        self.reduce_depth -= reduce
        self.scopes.pop()

    def stream_loop(self, s: Loop, loop_range, plan: StreamPlan) -> None:
        """`s` over `loop_range` as a stream: scalar iterations up to the first index whose
        element of `plan.align` starts a 64-byte line, then blocks of `STREAM_BLOCK`
        iterations, each prefetching `plan.prefetch` `PREFETCH_AHEAD` iterations ahead and then
        running the block (which LLVM vectorizes as usual)."""
        b = self.b
        lo, hi = (as_i64(b, v) for v in loop_range)
        start = lo
        if plan.align is not None:
            start = imin(b, b.add(lo, self._peel_count(lo, *plan.align)), hi)
            with for_range(b, lo, start, vectorize=False, unroll=False,
                           name=f"{s.var}.peel") as i:
                self._loop_body(s, i)
        with for_range(b, start, hi, step=STREAM_BLOCK, name=f"{s.var}.block") as first:
            ahead = b.add(first, ir.Constant(I64, PREFETCH_AHEAD))
            ahead_end = imin(b, b.add(ahead, ir.Constant(I64, STREAM_BLOCK)), hi)
            for buf, offset in plan.prefetch:
                self._prefetch(buf, offset, ahead, ahead_end)
            self.loop(s, (first, imin(b, b.add(first, ir.Constant(I64, STREAM_BLOCK)), hi)))

    def _element_address(self, buf: str, index: ir.Value) -> ir.Value:
        """The address of `buf[index]` as an integer (for arithmetic on it, never a load)."""
        ref = self._buf(buf)
        return self.b.add(self.b.ptrtoint(ref.ptr, I64),
                          self.b.mul(index, ir.Constant(I64, ref.dtype.itemsize)))

    def _peel_count(self, lo: ir.Value, buf: str, offset: int) -> ir.Value:
        """Iterations from `lo` until `buf[i + offset]` starts a `VECTOR_ALIGN` line."""
        b, size = self.b, self._buf(buf).dtype.itemsize
        first = self._element_address(buf, b.add(lo, ir.Constant(I64, offset)))
        gap = b.and_(b.sub(ir.Constant(I64, 0), first), ir.Constant(I64, VECTOR_ALIGN - 1))
        return b.udiv(b.add(gap, ir.Constant(I64, size - 1)), ir.Constant(I64, size))

    def _prefetch(self, buf: str, offset: int, lo: ir.Value, hi: ir.Value) -> None:
        """Prefetch the lines of `buf[i + offset]` for i in [lo, hi): addresses inside the
        chunk's own range only, so none past the array."""
        b = self.b
        prefetch_range(b, self._element_address(buf, b.add(lo, ir.Constant(I64, offset))),
                       self._element_address(buf, b.add(hi, ir.Constant(I64, offset))),
                       VECTOR_ALIGN)

    def store(self, s: Store) -> None:
        ref = self._buf(s.buf)
        val = self.expr(s.value)
        if ref.dtype == DType.BOOL:
            val = self.b.zext(val, I8)
        tag_access(self.b.store(val, self._addr(ref, s.index), align=_align(ref.dtype)),
                   self.access_group)
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
            val = tag_access(self.b.load(self._addr(ref, e.index), typ=MEM_TYPE[ref.dtype],
                                         align=_align(ref.dtype)), self.access_group)
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


@dataclass(frozen=True)
class StreamPlan:
    """How a long parallel innermost loop reading arrays front to back is rendered.

    Why: a vector loop reading a 16-byte-aligned array (what numpy's allocator returns) splits
    every load across two lines, and this Xeon's hardware prefetcher kept a compute-heavy loop
    (the tanh/exp chain A over 16M floats) waiting on memory: 37.9 ms in place and 26.2 out of
    place at 1 thread, against 11.5 / 11.6 with both fixed, the speed of the same loop on data
    in cache (0.71 ns an element)."""

    align: tuple[str, int] | None          # (buffer, offset): its accesses start lines
    prefetch: tuple[tuple[str, int], ...]  # (buffer, offset) of each read stream


def streaming_plan(loop: Loop, dtypes: dict[str, DType], callers: set[str]) -> StreamPlan | None:
    """The `StreamPlan` of `loop`, or None when it is not a stream: short
    (`STREAM_MIN_EXTENT`), not innermost, or reading no array as `buf[var + offset]`.

    A buffer qualifies when every access to it is `buf[var + offset]` with one offset, so one
    peel aligns all of them. `dtypes` holds the buffers whose addresses are arguments of the
    kernel (constants are left out); only `callers` (the caller's arrays) may need aligning,
    the arena and the output pool are aligned already. Buffers read are aligned in preference
    to buffers only written: a split load cost more than a split store where it was measured.
    """
    if loop.extent < STREAM_MIN_EXTENT or any(isinstance(t, Loop) for t in loop.body):
        return None
    f = facts(loop.body)
    unit = {}
    for name in (*f.reads, *(w for w in f.writes if w not in f.reads)):
        offsets = {_unit_offset(ix, loop.var) for ix in loads_of(loop.body, name)}
        if name in dtypes and len(offsets) == 1 and None not in offsets:
            unit[name] = offsets.pop()
    prefetch = tuple((n, unit[n]) for n in f.reads if n in unit)[:MAX_PREFETCH_STREAMS]
    if not prefetch:
        return None
    align = next(((n, off) for n, off in unit.items()
                  if n in callers and dtypes[n].itemsize < VECTOR_ALIGN), None)
    return StreamPlan(align, prefetch)


def _unit_offset(index: Expr, var: str) -> int | None:
    terms = affine(index)
    if terms is None or terms.get(var) != 1 or set(terms) - {var, 1}:
        return None
    return terms.get(1, 0)


def _const(e: Const) -> ir.Constant:
    ty = REG_TYPE[e.dtype]
    if e.dtype.is_float:
        return ir.Constant(ty, float(e.value))
    return ir.Constant(ty, int(bool(e.value)) if e.dtype == DType.BOOL else int(e.value))


def _align(dt: DType) -> int:
    return dt.itemsize
