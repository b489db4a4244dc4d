"""Nodes, SSA values and graphs.

A `Graph` is a function: typed inputs, nodes in a valid topological order, outputs. A `Node` is
an immutable op application; it may have several results (only `scan` does), each a `Value`.
Nodes compare by identity; graphs compare structurally (`g1 == g2` iff they print the same),
which is what the text round-trip promises.

    >>> print(g)
    func @mlp(%x: f32[128,784], %w1: f32[784,512]) -> (f32[128,512]) {
      %0 = matmul(%x, %w1) : f32[128,512] loc("mlp.py":5 in "mlp")
      return %0
    }
"""
from __future__ import annotations

import functools
import types as _pytypes
from dataclasses import dataclass, field
from dataclasses import replace as _dc_replace
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from .ops import Op
from .types import Loc, TensorType

_EMPTY: Mapping[str, Any] = _pytypes.MappingProxyType({})


@dataclass(frozen=True, eq=False)
class Node:
    """One op application. Immutable: change it with `node.replace(...)`, which makes a new node."""

    op: Op
    srcs: tuple["Value", ...]
    attrs: Mapping[str, Any]
    types: tuple[TensorType, ...]
    loc: Loc | None = None

    def __post_init__(self):
        if not isinstance(self.attrs, _pytypes.MappingProxyType):
            object.__setattr__(self, "attrs", _pytypes.MappingProxyType(dict(self.attrs)))
        object.__setattr__(self, "srcs", tuple(self.srcs))
        object.__setattr__(self, "types", tuple(self.types))

    @property
    def out(self) -> "Value":
        """The single result of a one-result node."""
        assert len(self.types) == 1, f"{self.op} has {len(self.types)} results"
        return Value(self, 0)

    @property
    def outs(self) -> tuple["Value", ...]:
        return tuple(Value(self, i) for i in range(len(self.types)))

    @property
    def type(self) -> TensorType:
        assert len(self.types) == 1, f"{self.op} has {len(self.types)} results"
        return self.types[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    def replace(self, **changes) -> "Node":
        return _dc_replace(self, **changes)

    def __repr__(self) -> str:
        return f"Node({self.op.value}, {', '.join(map(str, self.types))})"


@dataclass(frozen=True)
class Value:
    """Result `index` of `node`: the SSA value an op consumes."""

    node: Node
    index: int = 0

    @property
    def type(self) -> TensorType:
        return self.node.types[self.index]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype

    def __repr__(self) -> str:
        return f"Value({self.node.op.value}#{self.index}: {self.type})"


def make_input(name: str, type_: TensorType, index: int, loc: Loc | None = None) -> Value:
    """A graph input value (its node is an `input` node, kept out of `Graph.nodes`)."""
    return Node(Op.INPUT, (), {"name": name, "index": index}, (type_,), loc).out


@dataclass(frozen=True, eq=False)
class Graph:
    """A function in SSA form: `inputs` (values of `input` nodes), `nodes` in topological order,
    and `outputs` (values defined by inputs or nodes)."""

    name: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Value, ...]
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    # -- queries ------------------------------------------------------------------------------
    @property
    def input_types(self) -> tuple[TensorType, ...]:
        return tuple(v.type for v in self.inputs)

    @property
    def output_types(self) -> tuple[TensorType, ...]:
        return tuple(v.type for v in self.outputs)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(v.node.attrs["name"] for v in self.inputs)

    def users(self) -> dict[Node, list[Node]]:
        """For every node (and input node), the nodes that consume one of its results, in order."""
        users: dict[Node, list[Node]] = {v.node: [] for v in self.inputs}
        for n in self.nodes:
            users.setdefault(n, [])
            for s in n.srcs:
                users.setdefault(s.node, []).append(n)
        return users

    def walk(self) -> Iterator[Node]:
        """Every node, with the nodes of nested graphs (scan bodies) right after their parent."""
        for n in self.nodes:
            yield n
            for sub in subgraphs(n):
                yield from sub.walk()

    def with_nodes(self, nodes: Iterable[Node], outputs: Iterable[Value] | None = None) -> "Graph":
        return Graph(self.name, self.inputs, tuple(nodes),
                     self.outputs if outputs is None else tuple(outputs), self.meta)

    # -- structural identity -------------------------------------------------------------------
    @functools.cached_property
    def key(self) -> tuple:
        """A hashable canonical form: two graphs are equal iff their keys are equal."""
        ids: dict[Node, int] = {}
        for i, v in enumerate(self.inputs):
            ids[v.node] = -1 - i

        def ref(v: Value):
            if v.node not in ids:
                return ("dangling", v.node.op.value, id(v.node))
            return (ids[v.node], v.index)

        body = []
        for i, n in enumerate(self.nodes):
            ids[n] = i
            body.append((n.op, tuple(ref(s) for s in n.srcs), attrs_key(n.attrs), n.types, n.loc))
        ins = tuple((v.node.attrs["name"], v.type, v.node.loc) for v in self.inputs)
        return (self.name, ins, tuple(body), tuple(ref(v) for v in self.outputs))

    def __eq__(self, other) -> bool:
        return isinstance(other, Graph) and (self is other or self.key == other.key)

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        from .text import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return (f"<Graph @{self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, "
                f"{len(self.outputs)} outputs>")


def subgraphs(node: Node) -> list[Graph]:
    """The graphs nested in a node's attributes (a scan's body)."""
    return [v for v in node.attrs.values() if isinstance(v, Graph)]


def attr_key(v: Any):
    """A hashable, exact stand-in for an attribute value (arrays by dtype, shape and bytes)."""
    if isinstance(v, np.ndarray):
        return ("ndarray", v.dtype.str, v.shape, np.ascontiguousarray(v).tobytes())
    if isinstance(v, float):
        return ("float", v.hex()) if v == v else ("float", "nan")
    if isinstance(v, (tuple, list)):
        return tuple(attr_key(x) for x in v)
    if isinstance(v, Graph):
        return ("graph", v.key)
    return (type(v).__name__, v)


def attrs_key(attrs: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, attr_key(v)) for k, v in attrs.items()))
