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

    def __call__(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        outs = evaluate(self.graph, list(args))
        # Outputs may alias inputs or constants; hand back arrays the caller can mutate.
        return [np.array(o, copy=True) for o in outs]


def compile(graph: Graph, options) -> InterpExecutable:  # noqa: A001  (backend protocol)
    return InterpExecutable(graph)
