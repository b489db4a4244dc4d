"""The calling signature native backends check arguments against: one `ArgSpec` per input
and result, made from a graph's types once per compile."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph


@dataclass(frozen=True)
class ArgSpec:
    """One argument or result: its name, shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        return f"{np.dtype(self.dtype).name}[{','.join(map(str, self.shape))}]"


def signature(graph: Graph) -> tuple[list[ArgSpec], list[ArgSpec]]:
    """(inputs, results) of `graph`: inputs named after the graph's inputs, results result<i>."""
    inputs = [ArgSpec(n, t.shape, t.dtype.np) for n, t in zip(graph.input_names,
                                                             graph.input_types)]
    outputs = [ArgSpec(f"result{i}", t.shape, t.dtype.np)
               for i, t in enumerate(graph.output_types)]
    return inputs, outputs
