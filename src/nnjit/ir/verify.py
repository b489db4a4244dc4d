"""The verifier: a graph that passes it is well-formed IR.

Checks SSA and topological order (every operand defined before use, each node once), input
numbering and names, registered ops, arity, attribute schemas (canonical values), that each
node's stored types equal its shape rule's, outputs defined, and scan bodies recursively.
Errors name the node as IR text and its source location.
"""
from __future__ import annotations

import re

from .errors import ShapeError, VerifyError
from .graph import Graph, Node, Value, attr_key
from .opdef import OPDEFS
from .ops import Op
from .types import Loc, TensorType

# NOTE: the IR text prints graph and input names bare (`@name`, `%name`): the round trip needs this.
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def verify(g: Graph) -> Graph:
    """Raise VerifyError if `g` is malformed; return `g` so passes can chain it."""
    if not isinstance(g.name, str) or not _IDENT.fullmatch(g.name):
        raise VerifyError(f"graph name {g.name!r} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")
    defined: set[Value] = set()
    for i, v in enumerate(g.inputs):
        n = v.node if isinstance(v, Value) else None
        if n is None or n.op != Op.INPUT or n.attrs.get("index") != i or v.index != 0:
            what = _describe(n) if isinstance(n, Node) else repr(v)
            raise VerifyError(f"@{g.name}: input {i} is not the input node #{i}: {what}")
        name = n.attrs.get("name")
        if not isinstance(name, str) or not _IDENT.fullmatch(name):
            raise VerifyError(f"@{g.name}: input {i} has the name {name!r}, which is not an "
                              f"identifier: {_describe(n)}")
        if len(n.types) != 1 or not isinstance(n.types[0], TensorType):
            raise VerifyError(f"@{g.name}: input %{name} must have one TensorType, has "
                              f"{n.types!r}: {_describe(n)}")
        _check_sizes(f"@{g.name}: input %{name}", n)
        defined.add(v)
    names = [v.node.attrs["name"] for v in g.inputs]
    if len(set(names)) != len(names):
        raise VerifyError(f"@{g.name}: duplicate input names {names}")
    seen: set[int] = set()
    for idx, n in enumerate(g.nodes):
        if not isinstance(n, Node):
            raise VerifyError(f"@{g.name}: node %{idx} is a {type(n).__name__}, not a Node")
        if id(n) in seen:
            raise VerifyError(f"@{g.name}: node %{idx} appears twice: {_describe(n)}")
        seen.add(id(n))
        for k, s in enumerate(n.srcs):
            if not isinstance(s, Value) or s not in defined:
                raise VerifyError(f"@{g.name}: operand {k} of %{idx} {_why_undefined(g, idx, s)}: "
                                  f"{_describe(n)}")
        _check_node(g, idx, n)
        defined.update(n.outs)
    for k, v in enumerate(g.outputs):
        if not isinstance(v, Value) or v not in defined:
            what = _describe(v.node) if isinstance(v, Value) else repr(v)
            raise VerifyError(f"@{g.name}: output {k} {_why_undefined(g, len(g.nodes), v)}: "
                              f"{what}")
    return g


def _why_undefined(g: Graph, idx: int, s) -> str:
    if not isinstance(s, Value):
        return f"is a {type(s).__name__}, not a Value"
    if not 0 <= s.index < len(s.node.types):
        return f"refers to result #{s.index} of a node with {len(s.node.types)} result(s)"
    if any(s.node is m for m in g.nodes[idx:]):
        return "is defined later (not in topological order)"
    return "is not defined in the graph"


def _check_node(g: Graph, idx: int, n: Node) -> None:
    where = f"@{g.name} %{idx}"
    if n.op not in OPDEFS:
        raise VerifyError(f"{where}: op {n.op.value} is not a registered op: {_describe(n)}")
    if n.loc is not None and not isinstance(n.loc, Loc):
        raise VerifyError(f"{where}: loc must be a Loc or None, got {n.loc!r}: {_describe(n)}")
    if not all(isinstance(t, TensorType) for t in n.types):
        raise VerifyError(f"{where}: result types must be TensorTypes: {_describe(n)}")
    _check_sizes(f"{where}: {n.op.value}", n)
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
    for k, v in attrs.items():
        if attr_key(v) != attr_key(n.attrs[k]):
            raise VerifyError(f"{where}: attribute '{k}' holds {n.attrs[k]!r}, not its canonical "
                              f"form {v!r}: {_describe(n)}")
    for sub in (v for v in n.attrs.values() if isinstance(v, Graph)):
        try:
            verify(sub)
        except VerifyError as e:
            at = f" at {n.loc}" if n.loc else ""
            raise VerifyError(f"{where}: in the body of {n.op.value}{at}: {e}") from None
    try:
        want = d.shape([s.type for s in n.srcs], dict(n.attrs))
    except ShapeError as e:
        raise VerifyError(f"{where}: {n.op.value}: {e.reason}: {_describe(n)}") from None
    want = want if isinstance(want, tuple) else (want,)
    if tuple(want) != n.types:
        raise VerifyError(f"{where}: stored type {', '.join(map(str, n.types))} differs from "
                          f"the inferred {', '.join(map(str, want))}: {_describe(n)}")


def _check_sizes(where: str, n: Node) -> None:
    """Every result of `n` fits in memory (and so its sizes and strides in int64)."""
    for t in n.types:
        try:
            t.check_size()
        except ShapeError as e:
            raise VerifyError(f"{where}: {e.reason}: {_describe(n)}") from None


def _describe(n: Node) -> str:
    from .text import format_attr

    def attr(v) -> str:
        if isinstance(v, Graph):
            return "@" + str(v.name)
        try:
            return format_attr(v)
        except Exception:  # a malformed value: show it as Python sees it
            return repr(v)

    def typ(s) -> str:
        try:
            return str(s.type)
        except Exception:
            return "?"

    attrs = ", ".join(f"{k} = {attr(v)}" for k, v in n.attrs.items())
    srcs = ", ".join(typ(s) for s in n.srcs)
    text = f"{n.op.value}({srcs})" + (f" {{{attrs}}}" if attrs else "")
    text += " : " + ", ".join(map(str, n.types))
    return text + (f" at {n.loc}" if n.loc else "")
