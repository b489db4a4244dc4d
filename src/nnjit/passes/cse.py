"""Common subexpression elimination: structurally identical nodes are computed once.

Two nodes are identical when they have the same op, the same operands (after merging), the same
attributes (arrays compared by dtype, shape and bytes, so 0.0 and -0.0 stay apart; nested graphs
compared structurally, ignoring source locations and names) and the same result types. Operands
of add, mul, logical_and/or, eq and ne are compared as an unordered pair (IEEE add and mul are
commutative bit for bit; maximum/minimum are not, for signed zeros). Every op is pure, so
random_uniform nodes with the same seed value, salt, shape and dtype draw the same bits and merge.

Guarantees afterwards: no two nodes of a graph (or of any nested body) are identical; the first
of each group of identical nodes is kept, with its source location; results are unchanged.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..ir import Graph, Node, Op, Value
from ..ir.graph import attr_key

# Ops whose two operands can be swapped without changing a single bit of the result.
_SYMMETRIC = {Op.ADD, Op.MUL, Op.AND, Op.OR, Op.EQ, Op.NE}


def graph_shape_key(g: Graph) -> tuple:
    """A hashable structural key of `g` that ignores names and source locations."""
    ids: dict[Node, int] = {v.node: -1 - i for i, v in enumerate(g.inputs)}
    body = []
    for i, n in enumerate(g.nodes):
        ids[n] = i
        body.append((n.op, tuple((ids[s.node], s.index) for s in n.srcs), _attrs_key(n.attrs),
                     n.types))
    return (g.input_types, tuple(body), tuple((ids[v.node], v.index) for v in g.outputs))


def _attrs_key(attrs: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, ("graph", graph_shape_key(v)) if isinstance(v, Graph)
                         else attr_key(v)) for k, v in attrs.items()))


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """`graph` with duplicate nodes merged into their first occurrence.

        %0 = exp(%x) : f32[3]
        %1 = exp(%x) : f32[3]
        %2 = add(%0, %1) : f32[3]        ->  %0 = exp(%x); %1 = add(%0, %0)
    """
    env: dict[Value, Value] = {v: v for v in graph.inputs}
    ids: dict[Node, int] = {v.node: -1 - i for i, v in enumerate(graph.inputs)}
    seen: dict[tuple, Node] = {}
    nodes: list[Node] = []
    changed = False
    for n in graph.nodes:
        srcs = tuple(env[s] for s in n.srcs)
        attrs = _cse_bodies(n.attrs)
        new = n if srcs == n.srcs and attrs is n.attrs else n.replace(srcs=srcs, attrs=attrs)
        refs = tuple((ids[s.node], s.index) for s in srcs)
        if n.op in _SYMMETRIC:
            refs = tuple(sorted(refs))
        key = (n.op, refs, _attrs_key(attrs), n.types)
        first = seen.get(key)
        if first is not None:
            env.update(zip(n.outs, first.outs))
            changed = True
            continue
        seen[key] = new
        ids[new] = len(nodes)
        nodes.append(new)
        env.update(zip(n.outs, new.outs))
        changed |= new is not n
    if not changed:
        return graph
    return graph.with_nodes(nodes, [env[v] for v in graph.outputs])


def _cse_bodies(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    if not any(isinstance(v, Graph) for v in attrs.values()):
        return attrs
    new = {k: eliminate_common_subexpressions(v) if isinstance(v, Graph) else v
           for k, v in attrs.items()}
    return attrs if all(new[k] is attrs[k] for k in attrs) else new
