"""Constant folding: a node whose operands are all known is evaluated with its numpy reference
(`OpDef.ref`, the semantics every backend is tested against) and replaced by a `const`.

Known operands are consts, and `iota` and `broadcast_to(known)`, which are evaluated on demand
(up to EVAL_MAX_ELEMENTS) but never materialized on their own: a broadcast scalar stays a scalar
const plus a broadcast, which consumers read without a copy.

Guarantees afterwards: the outputs are bit-for-bit those of `evaluate` on the input graph; no
folded const has more than FOLD_MAX_ELEMENTS elements unless it is no larger than a const it was
computed from, so folding never turns a small constant into a large one; scan (and fusion) nodes
are never folded (their bodies are folded inside). `random_uniform` folds when its seed is a
constant and the result is small: Philox is a pure function of (seed, index, salt), so the
folded bits are the ones every backend would draw. Replaced nodes are left for
`eliminate_dead_code`.
"""
from __future__ import annotations

import numpy as np

from ..ir import CompileError, Graph, IndexOutOfRange, Op, Value, opdef
from ..ir.ops import COLLECTIVE
from .rewrite import Pat, PatternMatcher, RewriteContext, graph_rewrite

FOLD_MAX_ELEMENTS = 4096          # the largest const folding may create from smaller ones
EVAL_MAX_ELEMENTS = 1 << 16       # the largest iota/broadcast it will materialize to evaluate

# Never folded: constant already, symbolic sources kept compact, ops with bodies, and
# collectives (their value depends on the other processes).
_NOT_FOLDED = {Op.INPUT, Op.CONST, Op.IOTA, Op.BROADCAST_TO, Op.SCAN, Op.FUSION} | COLLECTIVE
FOLDABLE = frozenset(set(Op) - _NOT_FOLDED)


def known_value(v: Value) -> np.ndarray | None:
    """The value of `v` if it is known at compile time (and cheap to materialize), else None."""
    n = v.node
    if n.op == Op.CONST:
        return n.attrs["value"]
    if v.type.size > EVAL_MAX_ELEMENTS:
        return None
    if n.op == Op.IOTA:
        return opdef(Op.IOTA).ref([], n.attrs)
    if n.op == Op.BROADCAST_TO:
        inner = known_value(n.srcs[0])
        return None if inner is None else opdef(Op.BROADCAST_TO).ref([inner], n.attrs)
    return None


def _operands_known(v: Value) -> bool:
    srcs = v.node.srcs
    return bool(srcs) and all(s.node.op in (Op.CONST, Op.IOTA, Op.BROADCAST_TO) for s in srcs)


def _fold(ctx: RewriteContext) -> Value | None:
    n = ctx.node
    vals = [known_value(s) for s in n.srcs]
    if any(a is None for a in vals):
        return None
    largest_const = max((s.type.size for s in n.srcs if s.node.op == Op.CONST), default=0)
    if ctx.type.size > max(FOLD_MAX_ELEMENTS, largest_const):
        return None
    try:
        out = np.asarray(opdef(n.op).ref(vals, n.attrs))
    except IndexOutOfRange:
        return None     # a failing check stays, to raise when the program runs, at its line
    if out.shape != ctx.type.shape or out.dtype != ctx.type.dtype.np:
        raise CompileError(f"fold_constants: reference of {n.op.value} gave {out.dtype}"
                           f"{list(out.shape)}, expected {ctx.type} (at {n.loc})")
    return ctx.emit(Op.CONST, (), {"value": out})


FOLD = PatternMatcher([
    (Pat(FOLDABLE, where=_operands_known), _fold),
])


def fold_constants(graph: Graph) -> Graph:
    """`graph` with every foldable node on known operands replaced by a const.

        %0 = const() {value = dense<f32[], [2.0]>} : f32[]
        %1 = exp(%0) : f32[]                     ->  %1 = const() {value = dense<f32[], [7.389...]>}
    """
    return graph_rewrite(graph, FOLD)
