"""`CompiledFunction`: a traced function run through the pass pipeline and a backend, with the
calling convention (pytree in, pytree out, argument checking) and the inspection API."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..backends import get_backend
from ..frontend.pytree import flatten_with_paths, unflatten
from ..frontend.tracing import Traced, leaf_type, to_array
from ..ir import ArgumentError, Graph
from ..passes.manager import PassManager, Stage
from ..passes.pipeline import default_pipeline


@dataclass(frozen=True)
class Options:
    """How to compile: which backend, whether to fuse, which inputs may be consumed in place."""

    backend: str = "interp"
    fuse: bool = True
    donate: tuple[int, ...] = ()     # flat input indices whose buffers the callee may reuse
    verify: bool | None = None       # verify after every pass (default: NNJIT_VERIFY)


@dataclass
class CompiledFunction:
    """A function compiled for fixed argument shapes and dtypes.

        >>> cf = nnjit.jit(f).lower(x, w)      # or nnjit.compile(f, x, w)
        >>> cf(x, w)                           # runs the native code
        >>> print(cf.ir("input"))              # the IR after any stage; cf.stages() lists them
    """

    traced: Traced
    options: Options
    stages_: list[Stage]
    executable: Any
    _in_types: tuple = field(init=False)

    def __post_init__(self):
        self._in_types = self.traced.graph.input_types

    @property
    def graph(self) -> Graph:
        """The graph after the last pass (what the backend compiled)."""
        return self.stages_[-1].graph

    # -- calling ----------------------------------------------------------------------------
    def flat_args(self, args: Sequence[Any]) -> list[np.ndarray]:
        """Check `args` against the signature and return the leaves as arrays."""
        leaves, tree = flatten_with_paths(tuple(args))
        if tree != self.traced.in_tree:
            raise ArgumentError(f"{self.traced.graph.name}: arguments have structure {tree}, "
                                f"expected {self.traced.in_tree}")
        out = []
        for (path, x), want, name in zip(leaves, self._in_types, self.traced.in_paths):
            try:
                got = leaf_type(x, name)
            except TypeError as e:
                raise ArgumentError(str(e)) from None
            if got != want:
                raise ArgumentError(f"{self.traced.graph.name}: argument '{name}' must be "
                                    f"{want}, got {got}")
            out.append(to_array(x, want))
        return out

    def __call__(self, *args):
        outs = self.executable(self.flat_args(args))
        return unflatten(self.traced.out_tree, outs)

    # -- inspection -------------------------------------------------------------------------
    def stages(self) -> list[str]:
        return [s.name for s in self.stages_]

    def ir(self, stage: str | None = None) -> str:
        """The IR text after pass `stage` (default: the final graph)."""
        if stage is None:
            return str(self.graph)
        for s in self.stages_:
            if s.name == stage:
                return s.text
        raise KeyError(f"no stage {stage!r}; stages: {', '.join(self.stages())}")

    def pass_times(self) -> dict[str, float]:
        return {s.name: s.seconds for s in self.stages_}

    def _backend_attr(self, name: str):
        fn = getattr(self.executable, name, None)
        if fn is None:
            raise AttributeError(f"the {self.options.backend} backend has no {name}()")
        return fn

    def __getattr__(self, name: str):
        # Backend-specific inspection (llvm_ir, asm, kernel_ir, memory_plan, export, ...).
        if name.startswith("_") or name in ("traced", "options", "stages_", "executable"):
            raise AttributeError(name)
        return self._backend_attr(name)


def compile_traced(traced: Traced, options: Options) -> CompiledFunction:
    pm = PassManager(default_pipeline(fuse=options.fuse), verify_each=options.verify)
    graph, stages = pm.run(traced.graph)
    executable = get_backend(options.backend).compile(graph, options)
    return CompiledFunction(traced, options, stages, executable)
