"""`CompiledFunction`: a traced function run through the pass pipeline and a backend, with the
calling convention (pytree in, pytree out, argument checking) and the inspection API."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..backends import get_backend
from ..frontend.pytree import flatten_with_paths, leaf_labels, structure_change, unflatten
from ..frontend.tracing import Traced, leaf_type, nested_number_lists, to_array
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
    _lowered: object = field(init=False, default=None)

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
        names = self.traced.arg_names
        fn = self.traced.graph.name
        if tree != self.traced.in_tree:
            raise ArgumentError(nested_number_lists(fn, args, names) or
                                f"{fn}: argument structure differs from the compiled one: "
                                f"{structure_change(self.traced.in_tree, tree, names)}")
        out = []
        for (_, x), want, label in zip(leaves, self._in_types,
                                       leaf_labels(self.traced.in_tree, names)):
            try:
                got = leaf_type(x, label)
            except TypeError as e:
                raise ArgumentError(f"{fn}: argument {e}") from None
            if got != want:
                raise ArgumentError(f"{fn}: argument {label} must be {want}, got {got}")
            out.append(to_array(x, want))
        return out

    def __call__(self, *args, out=None):
        """Run on `args`. `out` (a pytree shaped like the results, of preallocated arrays)
        receives the results instead of fresh arrays: reusing memory avoids the page faults
        of a fresh large allocation on every call."""
        flat = self.flat_args(args)
        if out is None:
            return unflatten(self.traced.out_tree, self.executable(flat))
        leaves, tree = flatten_with_paths(out)
        if tree != self.traced.out_tree:
            raise ArgumentError(f"{self.traced.graph.name}: out has structure {tree}, the "
                                f"results have {self.traced.out_tree}")
        try:
            outs = self.executable(flat, outs=[x for _, x in leaves])
        except TypeError:
            raise ArgumentError(f"the {self.options.backend} backend cannot write into `out`; "
                                "call without it") from None
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

    def explain_fusion(self) -> "FusionReport":
        """Every kernel with its ops, and every fusion decision (rule, reason, bytes saved)."""
        return FusionReport.of(self.graph)

    def lowered(self):
        """The kernel-IR program and memory plan of the final graph (computed once)."""
        if self._lowered is None:
            low = getattr(self.executable, "lowered", None)
            if low is None:
                from ..codegen import lower_graph

                low = lower_graph(self.graph, donate=self.options.donate)
            self._lowered = low
        return self._lowered

    def memory_plan(self):
        """The arena layout: `print(cf.memory_plan().table())`; see also `memory_svg()`. Its
        `total_bytes` is everything the executable allocates (temporaries, and the backend's
        workspace, status word, constants and staging by purpose)."""
        own = getattr(self.executable, "plan", None)
        return own if own is not None else self.lowered().plan

    def memory_svg(self) -> str:
        from .viz import memory_svg

        return memory_svg(self.memory_plan(), f"@{self.graph.name}")

    def kernels(self) -> list[str]:
        """One line per kernel: name, kind and the source line it came from."""
        return [f"{k.name} [{type(k).__name__}] {k.src}" for k in self.lowered().program.kernels]

    def to_dot(self) -> str:
        """The final graph as Graphviz DOT, fused groups drawn as clusters."""
        from .viz import to_dot

        return to_dot(self.graph)

    def _backend_attr(self, name: str):
        fn = getattr(self.executable, name, None)
        if fn is None:
            raise AttributeError(f"the {self.options.backend} backend has no {name}()")
        return fn

    def __getattr__(self, name: str):
        # Backend-specific inspection (llvm_ir, asm, kernel_ir, memory_plan, export, ...).
        if name.startswith("_") or name in ("traced", "options", "stages_", "executable",
                                            "_lowered", "_in_types"):
            raise AttributeError(name)
        return self._backend_attr(name)


@dataclass(frozen=True)
class FusionReport:
    """What the fusion pass did: `groups` (kernel index, template, ops, source line) and
    `decisions` (each FusionDecision: rule, producer, fused or not, reason, bytes saved)."""

    groups: tuple[tuple[int, str, tuple[str, ...], str], ...]
    decisions: tuple

    @staticmethod
    def of(g: Graph) -> "FusionReport":
        from ..ir import Op

        groups = []
        for k, n in enumerate(g.nodes):
            if n.op == Op.CONST:
                continue
            if n.op == Op.FUSION:
                ops = tuple(m.op.value for m in n.attrs["body"].nodes if m.op != Op.CONST)
                kind = n.attrs["kind"]
            else:
                ops, kind = (n.op.value,), "single"
            groups.append((k, kind, ops, str(n.loc) if n.loc else ""))
        return FusionReport(tuple(groups), tuple(g.meta.get("fusion_decisions", ())))

    @property
    def num_kernels(self) -> int:
        return len(self.groups)

    def __str__(self) -> str:
        lines = [f"{self.num_kernels} kernels:"]
        for k, kind, ops, loc in self.groups:
            lines.append(f"  %{k} {kind}: {' -> '.join(ops)}" + (f"   ({loc})" if loc else ""))
        lines.append(f"{len(self.decisions)} fusion decisions:")
        lines += [f"  {d}" for d in self.decisions]
        return "\n".join(lines)


def compile_traced(traced: Traced, options: Options) -> CompiledFunction:
    pm = PassManager(default_pipeline(fuse=options.fuse), verify_each=options.verify)
    graph, stages = pm.run(traced.graph)
    executable = get_backend(options.backend).compile(graph, options)
    return CompiledFunction(traced, options, stages, executable)
