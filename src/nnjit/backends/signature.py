"""The calling signature of a compiled function: one `ArgSpec` per input and result (named by
the user's pytree paths), made from a graph's types once per compile."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def __str__(self) -> str:
        return f"{np.dtype(self.dtype).name}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[ArgSpec, ...]
    outputs: tuple[ArgSpec, ...]


def signature(graph: Graph, input_names: Sequence[str] | None = None) -> Signature:
    """`graph`'s signature: inputs named after `input_names` (default: the graph's input names),
    results result<i>."""
    names = input_names or graph.input_names
    inputs = tuple(ArgSpec(n, t.shape, t.dtype.np) for n, t in zip(names, graph.input_types))
    outputs = tuple(ArgSpec(f"result{i}", t.shape, t.dtype.np)
                    for i, t in enumerate(graph.output_types))
    return Signature(inputs, outputs)


__all__ = ["ArgSpec", "Signature", "signature"]
