"""Algebraic simplification: identities, no-op data movement and stop_gradient removal, as a rule
table run to a fixpoint by `graph_rewrite`.

Guarantees afterwards: no rule below matches anywhere (nested bodies included); every graph
output has the same type and, for every input, the same bits as before (NaN stays NaN, inf stays
inf, and the sign of zero is kept); no stop_gradient remains (autodiff has already run). Nodes a
rule bypasses are left for `eliminate_dead_code`.

Float exactness, rule by rule. Exact for every float x, NaN and inf included: x*1, x/1, --x,
x+(-0.0), x-(+0.0), x+(-y) = x-y and x-(-y) = x+y (IEEE defines subtraction so), max(x, x) and
min(x, x), and all data movement rules. NOT exact, so restricted: x+(+0.0) gives +0.0 for
x = -0.0, hence x+0 and x-(-0) fire on floats only with the zero whose sign makes them exact
(always on integers); x*0 is NaN for x = inf or NaN and -0.0 for x < 0, hence it fires on
integers only (wraparound keeps it exact); a float sum adds to +0.0 (numpy's and every
backend's accumulator), so even a sum over no axes turns -0.0 into +0.0 and is removed for
integers only (a max over no axes is exact: its identity is -inf). Never rewritten, being wrong
for some float: x-x and x/x (NaN at inf), 0/x, 0-x (+0.0 at x = +0.0 where neg gives -0.0),
x == x (false for NaN), and reassociations of float constants ((x+c1)+c2 rounds twice).
Operand broadcasts are dropped for every elementwise op but pow: numpy's power computes a
one-element exponent of 2, 0.5 or -1 as x*x, sqrt(x) or 1/x, and a broadcast one with its
general pow, so pow(-inf, broadcast_to(0.5)) = +inf but pow(-inf, 0.5) = NaN (at -0.0: +0.0
and -0.0; some finite x round 1 ulp apart).
"""
from __future__ import annotations

import numpy as np

from ..ir import DType, Graph, Op, ShapeError, Value
from ..ir.defs.common import broadcast_shapes
from ..ir.groups import POINTWISE
from ..ir.opdef import opdef
from .rewrite import Pat, PatternMatcher, RewriteContext, graph_rewrite

X, Y = Pat.var("x"), Pat.var("y")
_MULTI_OPERAND = {op for op in POINTWISE if (opdef(op).arity or 0) >= 2}


def _not_float(dt: DType) -> bool:
    return not dt.is_float


# An operand on which x * 0 == 0 and sum(x) == x hold: no NaN, inf or signed zero (integer
# arithmetic wraps, which keeps both exact).
EXACT_X = Pat.var("x", dtype=_not_float)


def _zero_with_sign(v: Value, negative: bool) -> bool:
    """`v` is a const of zeros; float zeros must have the given sign (integer zeros always do)."""
    arr = v.node.attrs["value"]
    if not bool((arr == 0).all()):
        return False
    return arr.dtype.kind != "f" or bool((np.signbit(arr) == negative).all())


# x + c == x bit for bit: c = -0.0 for floats (-0.0 + -0.0 = -0.0, but -0.0 + 0.0 = +0.0).
ADD_ZERO = Pat(Op.CONST, (), where=lambda v: _zero_with_sign(v, negative=True))
# x - c == x bit for bit: c = +0.0 for floats (x - 0.0 is x + -0.0).
SUB_ZERO = Pat(Op.CONST, (), where=lambda v: _zero_with_sign(v, negative=False))


def _is_identity_perm(perm) -> bool:
    return tuple(perm) == tuple(range(len(perm)))


def _slices_everything(v: Value) -> bool:
    a = v.node.attrs
    return all(s == 1 and lo == 0 and hi == n for n, lo, hi, s in
               zip(v.node.srcs[0].shape, a["starts"], a["stops"], a["steps"]))


def _moves_only_unit_dims(v: Value) -> bool:
    """The transpose keeps the order of the dims larger than 1: it only relabels the layout."""
    shape, perm = v.node.srcs[0].shape, v.node.attrs["perm"]
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


def _reads_a_broadcast(v: Value) -> bool:
    return any(s.node.op == Op.BROADCAST_TO for s in v.node.srcs)


# -- rule functions (each returns the replacement or None) -----------------------------------------

def _x(ctx: RewriteContext, x: Value, **_) -> Value | None:
    """`x` itself, when it has the matched node's type (broadcasting may have grown it)."""
    return x if x.type == ctx.type else None


def _y(ctx: RewriteContext, y: Value, **_) -> Value | None:
    return y if y.type == ctx.type else None


def _zeros(ctx: RewriteContext, x: Value, zero: Value) -> Value:
    # x * 0 has the shape of broadcast(x, zero), which the zero const broadcasts to.
    if zero.type == ctx.type:
        return zero
    return ctx.emit(Op.BROADCAST_TO, [zero], {"shape": ctx.type.shape})


def _reshape_of_reshape(ctx: RewriteContext, x: Value) -> Value:
    return ctx.emit(Op.RESHAPE, [x], {"shape": ctx.node.attrs["shape"]})


def _transpose_of_transpose(ctx: RewriteContext, x: Value, inner: Value) -> Value:
    # y = transpose(x, p1) has y.shape[j] = x.shape[p1[j]]; transpose(y, p2) reads p1[p2[k]].
    p1, p2 = inner.node.attrs["perm"], ctx.node.attrs["perm"]
    return ctx.emit(Op.TRANSPOSE, [x], {"perm": tuple(p1[k] for k in p2)})


def _as_reshape(ctx: RewriteContext, x: Value) -> Value:
    return ctx.emit(Op.RESHAPE, [x], {"shape": ctx.type.shape})


def _broadcast_of_broadcast(ctx: RewriteContext, x: Value) -> Value:
    return ctx.emit(Op.BROADCAST_TO, [x], {"shape": ctx.node.attrs["shape"]})


def _sub(ctx: RewriteContext, x: Value, y: Value) -> Value:
    return ctx.emit(Op.SUB, [x, y])


def _add(ctx: RewriteContext, x: Value, y: Value) -> Value:
    return ctx.emit(Op.ADD, [x, y])


def _drop_operand_broadcasts(ctx: RewriteContext) -> Value | None:
    """op(.., broadcast_to(v), ..) -> op(.., v, ..) where the op's own broadcasting gives the same
    result shape: the broadcast need not be materialized (`mul(x, broadcast_to(c))`). Exact for
    correctly rounded ops only: the reference's result must not depend on operand shapes."""
    srcs, changed = list(ctx.node.srcs), False
    for i, s in enumerate(srcs):
        if s.node.op != Op.BROADCAST_TO:
            continue
        trial = srcs[:i] + [s.node.srcs[0]] + srcs[i + 1:]
        try:
            shape = broadcast_shapes(*(t.shape for t in trial))
        except ShapeError:
            continue
        if shape == ctx.type.shape:
            srcs, changed = trial, True
    return ctx.rebuild(srcs) if changed else None


# -- the table -------------------------------------------------------------------------------------
# One rule per line; each has a Before/Expected test in tests/passes/test_simplify.py.

SIMPLIFY = PatternMatcher([
    # arithmetic identities
    (Pat(Op.ADD, (X, ADD_ZERO), commutative=True), _x),                          # x+0, 0+x
    (Pat(Op.SUB, (X, SUB_ZERO)), _x),                                             # x-0
    (Pat(Op.MUL, (X, Pat.const(1)), commutative=True), _x),                       # x*1, 1*x
    (Pat(Op.MUL, (EXACT_X, Pat.const(0, "zero")), commutative=True), _zeros),    # x*0, ints
    (Pat(Op.DIV, (X, Pat.const(1))), _x),                                         # x/1
    (Pat(Op.NEG, (Pat(Op.NEG, (X,)),)), _x),                                      # --x
    (Pat(Op.ADD, (X, Pat(Op.NEG, (Y,))), commutative=True), _sub),                # x+(-y)
    (Pat(Op.SUB, (X, Pat(Op.NEG, (Y,)))), _add),                                  # x-(-y)
    (Pat(Op.NOT, (Pat(Op.NOT, (X,)),)), _x),                                      # !!x
    (Pat(Op.STOP_GRADIENT, (X,)), _x),                                            # after autodiff
    (Pat(Op.CAST, (X,)), _x),                                                     # same dtype
    # selects, reductions, concat
    (Pat(Op.WHERE, (Pat.const(True), X, Y)), _x),
    (Pat(Op.WHERE, (Pat.const(False), X, Y)), _y),
    (Pat(Op.WHERE, (Pat.var("c"), X, X)), _x),
    (Pat(Op.SUM, (EXACT_X,), attrs={"axes": ()}), _x),                           # no axes
    (Pat(Op.MAX, (X,), attrs={"axes": ()}), _x),                                  # no axes
    (Pat(Op.CONCAT, (X,)), _x),                                                   # one operand
    # an operand combined with itself
    (Pat({Op.MAXIMUM, Op.MINIMUM, Op.AND, Op.OR}, (X, X)), _x),                  # max(x, x)
    # data movement
    (Pat(Op.RESHAPE, (X,)), _x),                                                  # same shape
    (Pat(Op.RESHAPE, (Pat(Op.RESHAPE, (X,)),)), _reshape_of_reshape),
    (Pat(Op.TRANSPOSE, (X,), attrs={"perm": _is_identity_perm}), _x),
    (Pat(Op.TRANSPOSE, (Pat(Op.TRANSPOSE, (X,), "inner"),)), _transpose_of_transpose),
    (Pat(Op.TRANSPOSE, (X,), where=_moves_only_unit_dims), _as_reshape),
    (Pat(Op.BROADCAST_TO, (X,)), _x),                                             # same shape
    (Pat(Op.BROADCAST_TO, (Pat(Op.BROADCAST_TO, (X,)),)), _broadcast_of_broadcast),
    (Pat(Op.SLICE, (X,), where=_slices_everything), _x),
    (Pat(Op.PAD, (X,), attrs={"pads": lambda p: all(lo == hi == 0 for lo, hi in p)}), _x),
    # Every pointwise op of several operands broadcasts them itself. NOT pow: numpy's power
    # takes a fast path (x*x, sqrt, 1/x) for a one-element exponent; its reference now expands
    # the exponent so both shapes agree, but the rule stays off pow to stay independent of that.
    (Pat(_MULTI_OPERAND - {Op.POW}, where=_reads_a_broadcast), _drop_operand_broadcasts),
])


def simplify(graph: Graph) -> Graph:
    """`graph` with the SIMPLIFY rules applied to a fixpoint (scan bodies included).

        %0 = reshape(%x) {shape = [6]} : f32[6]
        %1 = reshape(%0) {shape = [2, 3]} : f32[2,3]      # %x is f32[2,3]
        %2 = mul(%1, %one) : f32[2,3]                     # %one = const 1.0
        return %2                                     ->  return %x
    """
    return graph_rewrite(graph, SIMPLIFY)
