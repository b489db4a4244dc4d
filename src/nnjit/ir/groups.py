"""Op groups derived from the registry, for the passes and codegen: an op joins its groups by its
OpDef alone (its `kind`, its `scalar` rule), never by a hand-kept list.

    POINTWISE    elementwise ops with a scalar rule: out[i] = f(operands[i])
    SOURCE       elementwise ops computed from coordinates (constants, iota, random_uniform)
    VIEW         strided views of their operand (reshape, transpose, broadcast_to, slice)
    MOVEMENT     views and the other injective ops (concat, pad, take)
    LOOP_OPS     everything a loop kernel computes inline (constants excepted)
    REDUCE, CONTRACTION, WINDOW, OPAQUE   by kind
    EXPENSIVE    recomputing them per use costs real work (their scalar form calls a
                 transcendental, or their OpDef says so): fusion will not duplicate them
"""
from __future__ import annotations

from . import defs  # noqa: F401  (registers every OpDef)
from .kernel import EXPENSIVE_KOPS, Call, Var, children
from .opdef import OPDEFS, OpDef, ops_of_kind
from .ops import Kind, Op
from .types import DType


def _calls_expensive(d: OpDef) -> bool:
    probe = [Var(f"a{i}", DType.F32) for i in range(d.arity or 1)]
    try:
        e = d.scalar(probe, DType.F32, {a.name: a.default for a in d.attrs})
    except Exception:   # a rule that needs real attributes: judge it by its doc alone
        return False
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Call) and x.op in EXPENSIVE_KOPS:
            return True
        stack.extend(children(x))
    return False


POINTWISE = frozenset(op for op, d in OPDEFS.items() if d.scalar is not None)
SOURCE = ops_of_kind(Kind.ELEMENTWISE) - POINTWISE
VIEW = ops_of_kind(Kind.VIEW)
MOVEMENT = ops_of_kind(Kind.VIEW, Kind.INJECTIVE)
# Constants are never members: single-element ones are copied into each body, arrays stay in
# memory.
LOOP_OPS = ops_of_kind(Kind.ELEMENTWISE, Kind.VIEW, Kind.INJECTIVE) - {Op.CONST}
REDUCE = ops_of_kind(Kind.REDUCE)
CONTRACTION = ops_of_kind(Kind.CONTRACTION)
WINDOW = ops_of_kind(Kind.WINDOW)
OPAQUE = ops_of_kind(Kind.OPAQUE)
EXPENSIVE = frozenset(op for op, d in OPDEFS.items()
                      if d.expensive or (d.expensive is None and d.scalar is not None
                                         and _calls_expensive(d)))

__all__ = ["CONTRACTION", "EXPENSIVE", "LOOP_OPS", "MOVEMENT", "OPAQUE", "POINTWISE", "REDUCE",
           "SOURCE", "VIEW", "WINDOW"]
