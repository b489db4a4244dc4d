"""The reference semantics of a graph: run every node's numpy reference in order.

This is the ground truth every backend is tested against; `backends/interp` wraps it as a
backend. No eval, no codegen: just `OpDef.ref` per node.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import CompileError, IndexOutOfRange
from .graph import Graph, Node, Value, subgraphs
from .opdef import opdef
from .ops import Op


def evaluate(graph: Graph, args: Sequence[np.ndarray],
             on_node: Callable[[Node, tuple[np.ndarray, ...]], None] | None = None,
             impls: Mapping[Op, Callable] | None = None) -> list[np.ndarray]:
    """Outputs of `graph` on `args` (arrays already of the input types). `on_node(node, results)`
    is called after each node, which is how `nnjit.debug.bisect` compares stage by stage.
    `impls` replaces the reference of some top-level ops (`fn(inputs, attrs)`, same contract):
    how the interp backend runs collectives through a process group."""
    env: dict[Value, np.ndarray] = dict(zip(graph.inputs, args))
    impls = impls or {}
    for n in graph.nodes:
        try:
            fn = impls.get(n.op) or opdef(n.op).ref
            out = fn([env[s] for s in n.srcs], n.attrs)
        except IndexOutOfRange as e:
            # A check inside a body (scan, fusion) has already named its own line.
            located = n.loc and not subgraphs(n)
            raise IndexOutOfRange(f"{e} at {n.loc}" if located else str(e)) from None
        outs = out if isinstance(out, tuple) else (out,)
        for v, o in zip(n.outs, outs):
            o = np.asarray(o)
            if o.shape != v.type.shape or o.dtype != v.type.dtype.np:
                raise CompileError(f"reference of {n.op.value} gave {o.dtype}{list(o.shape)}, "
                                   f"expected {v.type} (at {n.loc})")
            env[v] = o
        if on_node is not None:
            on_node(n, tuple(env[v] for v in n.outs))
    return [env[v] for v in graph.outputs]
