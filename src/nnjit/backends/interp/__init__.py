"""The numpy reference backend: runs any verified Graph node by node with each op's reference.

It is the ground truth for every other backend and the "eager, unfused" baseline.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from ...ir import Graph, evaluate
from ..collective import graph_impls


class InterpExecutable:
    """Runs a graph with `nnjit.ir.evaluate`; results are fresh arrays the caller owns."""

    extras: tuple = ()

    def __init__(self, graph: Graph):
        self.graph = graph
        self.impls = graph_impls(graph)     # collectives across processes, through MPI

    def __call__(self, args: Sequence[np.ndarray], outs=None) -> list[np.ndarray]:
        results = evaluate(self.graph, list(args), impls=self.impls)
        if outs is not None:
            for o, r in zip(outs, results):
                np.copyto(o, r)
            return list(outs)
        # Results may alias inputs or constants; hand back arrays the caller can mutate.
        return [np.array(r, copy=True) for r in results]

    def timed(self, args: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
        """The results and each graph node's seconds (the reference runs node by node)."""
        times, last = [], [time.perf_counter()]

        def tick(node, outs) -> None:
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        results = evaluate(self.graph, list(args), tick, self.impls)
        return [np.array(r, copy=True) for r in results], times

    def inspect(self) -> dict:
        return {}


class InterpBackend:
    name = "interp"
    lowers = False      # it runs the graph itself

    def schedule(self, options) -> list:
        return []

    def mapping(self, options) -> list:
        return []

    def compile_program(self, graph: Graph, signature) -> InterpExecutable:
        return InterpExecutable(graph)


BACKEND = InterpBackend()
NAME = BACKEND.name
