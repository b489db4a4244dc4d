"""The verifier: a graph that passes it is well-formed IR.

Checks SSA and topological order (every operand defined before use, each node once), input
numbering, registered ops, arity, attribute schemas, that each node's stored types equal its
shape rule's, outputs defined, and scan bodies recursively. Errors name the node as IR text
and its source location.
"""
from __future__ import annotations

from .errors import ShapeError, VerifyError
from .graph import Graph, Node, Value
from .opdef import OPDEFS
from .ops import Op


def verify(g: Graph) -> Graph:
    """Raise VerifyError if `g` is malformed; return `g` so passes can chain it."""
    defined: set[Value] = set()
    for i, v in enumerate(g.inputs):
        n = v.node
        if n.op != Op.INPUT or n.attrs.get("index") != i or v.index != 0:
            raise VerifyError(f"@{g.name}: input {i} is not the input node #{i} ({n!r})")
        defined.add(v)
    names = [v.node.attrs["name"] for v in g.inputs]
    if len(set(names)) != len(names):
        raise VerifyError(f"@{g.name}: duplicate input names {names}")
    seen: set[int] = set()
    for idx, n in enumerate(g.nodes):
        if id(n) in seen:
            raise VerifyError(f"@{g.name}: node %{idx} appears twice: {_describe(n)}")
        seen.add(id(n))
        for k, s in enumerate(n.srcs):
            if s not in defined:
                why = ("is defined later (not in topological order)"
                       if any(s.node is m for m in g.nodes[idx:]) else "is not defined in the graph")
                raise VerifyError(f"@{g.name}: operand {k} of %{idx} {why}: {_describe(n)}")
        _check_node(g, idx, n)
        defined.update(n.outs)
    for k, v in enumerate(g.outputs):
        if v not in defined:
            raise VerifyError(f"@{g.name}: output {k} ({v.type}) is not defined in the graph")
    return g


def _check_node(g: Graph, idx: int, n: Node) -> None:
    where = f"@{g.name} %{idx}"
    if n.op not in OPDEFS:
        raise VerifyError(f"{where}: op {n.op.value} is not a registered op: {_describe(n)}")
    d = OPDEFS[n.op]
    if d.arity is not None and len(n.srcs) != d.arity:
        raise VerifyError(f"{where}: {n.op.value} takes {d.arity} operands, has {len(n.srcs)}: "
                          f"{_describe(n)}")
    try:
        attrs = d.normalize_attrs(n.attrs)
    except ShapeError as e:
        raise VerifyError(f"{where}: {n.op.value}: {e.reason}: {_describe(n)}") from None
    if set(attrs) != set(n.attrs):
        raise VerifyError(f"{where}: attributes {sorted(n.attrs)} do not match the schema "
                          f"{sorted(attrs)}: {_describe(n)}")
    for sub in (v for v in n.attrs.values() if isinstance(v, Graph)):
        try:
            verify(sub)
        except VerifyError as e:
            raise VerifyError(f"{where}: in the body of {n.op.value}: {e}") from None
    try:
        want = d.shape([s.type for s in n.srcs], dict(n.attrs))
    except ShapeError as e:
        raise VerifyError(f"{where}: {n.op.value}: {e.reason}: {_describe(n)}") from None
    want = want if isinstance(want, tuple) else (want,)
    if tuple(want) != n.types:
        raise VerifyError(f"{where}: stored type {', '.join(map(str, n.types))} differs from "
                          f"the inferred {', '.join(map(str, want))}: {_describe(n)}")


def _describe(n: Node) -> str:
    from .text import format_attr

    attrs = ", ".join(f"{k} = {format_attr(v) if not isinstance(v, Graph) else '@' + v.name}"
                      for k, v in n.attrs.items())
    srcs = ", ".join(str(s.type) for s in n.srcs)
    text = f"{n.op.value}({srcs})" + (f" {{{attrs}}}" if attrs else "")
    text += " : " + ", ".join(map(str, n.types))
    return text + (f" at {n.loc}" if n.loc else "")
