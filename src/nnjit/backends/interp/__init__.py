"""The numpy reference backend: runs any verified Graph node by node with each op's reference.

It is the ground truth for every other backend and the "eager, unfused" baseline.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...ir import Graph, evaluate

NAME = "interp"


class InterpExecutable:
    """Runs a graph with `nnjit.ir.evaluate`; results are fresh arrays the caller owns."""

    def __init__(self, graph: Graph):
        self.graph = graph

    def __call__(self, args: Sequence[np.ndarray], outs=None) -> list[np.ndarray]:
        results = evaluate(self.graph, list(args))
        if outs is not None:
            for o, r in zip(outs, results):
                np.copyto(o, r)
            return list(outs)
        # Results may alias inputs or constants; hand back arrays the caller can mutate.
        return [np.array(r, copy=True) for r in results]


def compile(graph: Graph, options) -> InterpExecutable:  # noqa: A001  (backend protocol)
    return InterpExecutable(graph)
