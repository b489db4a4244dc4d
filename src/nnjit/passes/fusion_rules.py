"""The fusion rules, as data: what may join a kernel, and which kernel templates exist.

A candidate kernel is a set of nodes. `classify(nodes, roots)` names the template that can
lower it as one kernel (see nnjit.codegen) or says why none can:

  loop     elementwise and movement ops over one output shape
  reduce   reductions over one domain with their elementwise producers and consumers (softmax)
  gemm     one matmul, view-only operand producers (transposes fold into strides), and an
           elementwise epilogue of the matmul's size (bias, activation, residual add; through
           reshapes)
  conv     one convolution with elementwise producers of its input (read by im2col) and, for
           the forward and input-gradient convolutions, an elementwise epilogue
  window   one pooling op with cheap elementwise producers and (forward only) an epilogue

`RULES` are checked in order for each producer a kernel could absorb; the first objection is
the recorded reason for not fusing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from ..ir import Node, Op, Value

# What a loop kernel computes inline (LOOP_OPS); constants are never members: single-element
# ones are copied into each body, array ones stay in memory.
from ..ir.groups import (  # noqa: F401
    CONTRACTION,
    EXPENSIVE,
    LOOP_OPS,
    MOVEMENT,
    OPAQUE,
    POINTWISE,
    REDUCE,
    VIEW,
    WINDOW,
)

ANCHORS = CONTRACTION | WINDOW


def is_free_const(n: Node) -> bool:
    """Single-element constants are inlined into every kernel that reads them."""
    return n.op == Op.CONST and n.type.size == 1


def _ancestors(n: Node, members: set[Node]) -> set[Node]:
    out, stack = set(), [n]
    while stack:
        for s in stack.pop().srcs:
            if s.node in members and s.node not in out:
                out.add(s.node)
                stack.append(s.node)
    return out


def _descendants(n: Node, members: set[Node]) -> set[Node]:
    out = set()
    changed = True
    while changed:
        changed = False
        for m in members:
            if m not in out and any(s.node is n or s.node in out for s in m.srcs):
                out.add(m)
                changed = True
    return out


def classify(nodes: set[Node], roots: Iterable[Value]) -> tuple[str | None, str]:
    """(template, "") when `nodes` lower as one kernel with results `roots`; else
    (None, reason)."""
    roots = list(roots)
    anchors = [n for n in nodes if n.op in ANCHORS]
    reds = [n for n in nodes if n.op in REDUCE]
    others = [n for n in nodes if n.op not in ANCHORS | REDUCE]
    if bad := [n for n in others if n.op not in LOOP_OPS]:
        return None, f"{bad[0].op.value} cannot be computed inside a fused loop"
    if len(anchors) > 1:
        return None, f"one kernel cannot hold both {anchors[0].op.value} and {anchors[1].op.value}"
    if anchors and reds:
        return None, f"{anchors[0].op.value} and a reduction cannot share a kernel"
    if anchors:
        a = anchors[0]
        return (_contraction(a, nodes, roots) if a.op in CONTRACTION else
                _window(a, nodes, roots))
    if reds:
        return _reduce(reds, nodes, roots)
    shapes = {v.shape for v in roots}
    if len(shapes) > 1:
        return None, "its results would have different shapes " + ", ".join(map(str, shapes))
    return "loop", ""


def _split(a: Node, nodes: set[Node]):
    before = _ancestors(a, nodes)
    after = _descendants(a, nodes)
    return before, after


def _contraction(a: Node, nodes, roots):
    before, after = _split(a, nodes)
    # A reshape keeps each element's flat index, so a matmul's epilogue may run through one
    # (the LSTM's input projection [T*B, 4H] viewed as [T, B, 4H] before its bias) as long as
    # every value after the GEMM still has one element per element of C.
    follow = POINTWISE | {Op.RESHAPE} if a.op == Op.MATMUL else POINTWISE
    if moved := [n for n in after if n.op not in follow]:
        return None, (f"{moved[0].op.value} would rearrange the {a.op.value} result: only "
                      "elementwise ops can follow it in its kernel")
    if grown := [n for n in after if n.type.size != a.type.size]:
        return None, (f"{grown[0].op.value} {grown[0].type} broadcasts the {a.op.value} "
                      f"result {a.type}")
    for r in roots:
        if r.node is not a and (r.node not in after or r.shape != a.type.shape and
                                a.op != Op.MATMUL):
            return None, (f"result {r.node.op.value} {r.type} is not an epilogue of "
                          f"{a.op.value} (shape {a.type})")
    if a.op == Op.CONV2D_GRAD_WEIGHT and after:
        return None, "conv2d_grad_weight accumulates over the batch: no epilogue can follow"
    weight_side = a.srcs[1] if a.op in (Op.MATMUL, Op.CONV2D, Op.CONV2D_GRAD_INPUT) else None
    if a.op == Op.MATMUL:
        views_only = all(n.op in VIEW for n in before)
        return ("gemm", "") if views_only else (None, "matmul operands may only be views "
                                                      "(transpose, reshape, broadcast, slice)")
    if weight_side is not None and weight_side.node in nodes:
        return None, f"the weight of {a.op.value} must be materialized"
    if a.op == Op.CONV2D_GRAD_INPUT and not all(n.op in VIEW for n in before):
        return None, "conv2d_grad_input reads dy through the GEMM: views only"
    return "conv", ""


def _window(a: Node, nodes, roots):
    before, after = _split(a, nodes)
    if moved := [n for n in after if n.op not in POINTWISE]:
        return None, (f"{moved[0].op.value} would rearrange the {a.op.value} result: only "
                      "elementwise ops can follow it in its kernel")
    forward = a.op in (Op.MAX_POOL2D, Op.AVG_POOL2D)
    for r in roots:
        if r.node is a:
            continue
        if not forward or r.node not in after or r.shape != a.type.shape:
            return None, f"{a.op.value} only takes an elementwise epilogue of its own shape"
    if not forward and after:
        return None, f"{a.op.value} scatters into its result: no epilogue can follow"
    if expensive := [n for n in before if n.op in EXPENSIVE]:
        return None, (f"{expensive[0].op.value} would be recomputed for every window that "
                      f"reads it")
    return "window", ""


def _reduce(reds: list[Node], nodes, roots):
    domain = _domain
    shape, axes = domain(reds[0])
    for r in reds[1:]:
        if domain(r) != (shape, axes):
            return None, f"reductions over different domains {domain(reds[0])} and {domain(r)}"
    kept = tuple(d for i, d in enumerate(shape) if i not in axes)
    keep = tuple(1 if i in axes else d for i, d in enumerate(shape))
    allowed = {shape, kept, keep}
    for n in nodes:
        if n.op in REDUCE:
            continue
        if n.type.size > 1 and n.type.shape not in allowed:
            return None, f"{n.op.value} {n.type} fits neither the rows {kept} nor {shape}"
        if n.op in MOVEMENT and n.op not in (Op.RESHAPE, Op.BROADCAST_TO) and _ancestors(
                n, nodes) & set(reds):
            return None, f"{n.op.value} would rearrange reduced values inside the kernel"
    for n in nodes:
        # The kernel has one row's reduced values at hand: an element of the domain may read
        # them only at its own row, so a reduced value must broadcast like keepdims (numpy
        # aligns the trailing dims: a sum over axis 1 of (3, 3) added to (3, 3) reads by
        # column).
        if n.op in REDUCE or n.type.shape != shape:
            continue
        for s in n.srcs:
            if s.shape != shape and s.node in nodes and (
                    s.node in reds or _ancestors(s.node, nodes) & set(reds)) and \
                    (1,) * (len(shape) - len(s.shape)) + s.shape != keep:
                return None, (f"{n.op.value} reads the reduced {s.type} across rows of "
                              f"{shape} (it broadcasts by trailing dims, not as {keep})")
    row_dims = [d for d in kept if d != 1]
    for r in roots:
        # A result is stored once per row (its non-unit dims are the rows') or per element.
        if r.shape != shape and [d for d in r.shape if d != 1] != row_dims:
            return None, f"result {r.type} fits neither the rows {kept} nor {shape}"
    return "reduce", ""


# -- rules ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """`check(producer, group, ctx)` returns a reason not to fuse, or None."""

    name: str
    check: Callable


def _opaque(p: Node, g, ctx):
    if p.op in OPAQUE:
        return f"{p.op.value} is opaque: it is a kernel of its own"
    if p.op == Op.CONST:
        return "array constants stay in memory (single-element constants are inlined)"
    return None


def _one_anchor(p: Node, g, ctx):
    if p.op in ANCHORS | REDUCE and any(m.op in ANCHORS for m in g.nodes):
        anchor = next(m for m in g.nodes if m.op in ANCHORS)
        return f"the kernel already computes {anchor.op.value}"
    if p.op in ANCHORS and any(m.op in REDUCE for m in g.nodes):
        return "a reduction kernel cannot also run a contraction or window"
    return None


def _no_cycle(p: Node, g, ctx):
    via = ctx.path_outside(p, g)
    if via is not None:
        return f"fusing would create a cycle through {via.op.value} at {via.loc}"
    return None


def recompute_factor(p: Node, nodes: set[Node]) -> int:
    """How many times a kernel made of `nodes` (p included) evaluates each element of p: a
    larger elementwise descendant means p is broadcast and recomputed per use."""
    reds = [n for n in nodes if n.op in REDUCE]
    if reds and p.op not in REDUCE:
        shape, axes = _domain(reds[0])
        rows = (tuple(d for i, d in enumerate(shape) if i not in axes),
                tuple(1 if i in axes else d for i, d in enumerate(shape)))
        if p.type.shape in rows:
            return 1   # a row value: computed once per row of a reduction kernel
    sizes = [m.type.size for m in _descendants(p, nodes) if m.op in POINTWISE | MOVEMENT]
    return max(sizes, default=0) // max(p.type.size, 1)


def _domain(r: Node) -> tuple[tuple[int, ...], tuple[int, ...]]:
    axes = (r.attrs["axis"],) if r.op == Op.ARGMAX else tuple(r.attrs["axes"])
    return r.srcs[0].shape, axes


def _no_expensive_recompute(p: Node, g, ctx):
    if p.op not in EXPENSIVE:
        return None
    factor = recompute_factor(p, g.nodes | {p})
    if factor > 1:
        return f"{p.op.value} would be recomputed {factor} times (a consumer broadcasts it)"
    return None


def _template(p: Node, g, ctx):
    template, reason = classify(g.nodes | {p}, ctx.roots(g.nodes | {p}))
    return None if template else reason


RULES: tuple[Rule, ...] = (
    Rule("opaque-ops-stay-alone", _opaque),
    Rule("one-anchor-per-kernel", _one_anchor),
    Rule("no-cycles", _no_cycle),
    Rule("no-expensive-recompute", _no_expensive_recompute),
    Rule("template-must-fit", _template),
)


def fused_rule_name(p: Node, template: str, g_nodes: set[Node]) -> str:
    """The name recorded for a successful fusion: what kind of fusion it was."""
    anchor = next((m for m in g_nodes if m.op in ANCHORS | REDUCE), None)
    if p.op in ANCHORS | REDUCE or anchor is None:
        return {"loop": "elementwise-chain", "reduce": "reduction-with-consumers",
                "gemm": "gemm-epilogue", "conv": "conv-epilogue",
                "window": "pool-epilogue"}[template]
    if p in _ancestors(anchor, g_nodes | {p}):
        return {"gemm": "gemm-operand-view", "conv": "conv-input-producer",
                "window": "pool-input-producer",
                "reduce": "reduction-with-producers"}.get(template, "elementwise-chain")
    return {"gemm": "gemm-epilogue", "conv": "conv-epilogue", "window": "pool-epilogue",
            "reduce": "reduction-with-consumers"}.get(template, "elementwise-chain")
