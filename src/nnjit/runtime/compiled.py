"""The driver: a traced function run through the graph passes, the codegen stages its backend
asks for and the backend, with the calling convention (pytree in, pytree out, arguments checked
once, here) and the inspection API.

    graph passes (simplify .. fuse) -> lower -> <backend schedule> -> plan_memory -> backend

One PassManager runs every stage, so NNJIT_DUMP and NNJIT_VERIFY see Programs as well as
Graphs, and `cf.ir(stage)` shows any of them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..backends import cache, get_backend
from ..backends.signature import Signature, signature
from ..codegen import lower_graph, program_stages
from ..codegen.pipeline import STAGE_NAMES
from ..codegen.memory_plan import MemoryPlan
from ..frontend.pytree import flatten_with_paths, leaf_labels, structure_change, unflatten
from ..frontend.tracing import Traced, leaf_type, nested_number_lists, to_array
from ..ir import ArgumentError, Graph, NnjitError, Op
from ..ir.text import print_graph
from ..ir.kernel import Program
from ..passes.manager import PassManager, Stage
from ..passes.pipeline import default_pipeline
from .profile import profile as profile_call
from .viz import to_dot
from .viz_html import to_html
from .viz_memory import memory_svg


@dataclass(frozen=True)
class Options:
    """How to compile: which backend, whether to fuse, which inputs may be consumed in place."""

    backend: str = "interp"
    fuse: bool = True
    donate: tuple[int, ...] = ()     # flat input indices whose buffers the callee may reuse
    verify: bool | None = None       # verify after every pass (default: NNJIT_VERIFY)


def pipeline(graph: Graph, options: Options, graph_passes: bool = True) -> list:
    """Every stage `graph` goes through for `options`: the graph passes (unless already run),
    then, for a backend that compiles kernel IR, lowering, its schedule and memory planning."""
    backend = get_backend(options.backend)
    stages = default_pipeline(options.fuse) if graph_passes else []
    if backend.lowers:
        # NOTE: an empty input still gets a one-element buffer; its array has no bytes to write.
        donate = tuple(i for i in options.donate if graph.inputs[i].type.size > 0)
        stages += program_stages(backend.schedule(options), donate,
                                 mapping=backend.mapping(options))
    return stages


def compile_graph(graph: Graph, options: Options, graph_passes: bool = True,
                  input_names: Sequence[str] | None = None, warm_key: str | None = None):
    """(executable, stages, signature) for `graph`: the one path from a graph to native code.
    `warm_key` (from `warm_key`): the backend also stores what `load_warm` needs under it."""
    final, stages = run_stages(graph, options, graph_passes)
    sig = signature(graph, input_names)
    backend = get_backend(options.backend)
    if warm_key is None:
        return backend.compile_program(final, sig), stages, sig
    return backend.compile_program(final, sig, warm_key=warm_key), stages, sig


def run_stages(graph: Graph, options: Options, graph_passes: bool = True) -> tuple[Any, list]:
    """(the final graph or Program, every stage) for `graph` under `options`."""
    pm = PassManager(pipeline(graph, options, graph_passes), verify_each=options.verify,
                     known=[n for n, _ in default_pipeline(True)] + list(STAGE_NAMES))
    return pm.run(graph)


#: Variables that only say where the cache lives or what to log: left out of the warm key.
_UNKEYED_ENV = frozenset({"NNJIT_CACHE", "NNJIT_CACHE_DIR", "NNJIT_LOG"})
#: Asking to watch a compile (dumps, per-pass verification, debug output) means compiling.
_WATCH_ENV = ("NNJIT_DUMP", "NNJIT_DUMP_DIR", "NNJIT_VERIFY", "NNJIT_DEBUG")


def warm_key(graph: Graph, options: Options, input_names: Sequence[str]) -> str | None:
    """The disk-cache key of the executable for `graph` under `options`, computed before any
    pass runs, so a warm start (a new process, the cache populated) skips passes, codegen and
    LLVM alike; None where there is none (a backend without warm starts, a watched compile).

    It covers everything the executable depends on: the traced graph's text (types, shapes,
    attributes and constants exactly, source lines too, which error messages quote), the
    options (fusion, donated inputs), the argument names, nnjit's source files (`cache.
    package_digest`), every NNJIT_* variable but the cache's own and NNJIT_LOG, and what the
    backend names (`warm_key_parts`: for llvm the host target, pipeline, threads, the thread pool)."""
    backend = get_backend(options.backend)
    parts = getattr(backend, "warm_key_parts", None)
    if parts is None or options.verify or graph.meta or not cache.enabled():
        return None
    if any(os.environ.get(v, "").strip() not in ("", "0") for v in _WATCH_ENV):
        return None
    env = sorted((k, v) for k, v in os.environ.items()
                 if k.startswith("NNJIT_") and k not in _UNKEYED_ENV)
    return cache.cache_key("warm-v1", print_graph(graph),
                           repr((options.backend, options.fuse, tuple(options.donate))),
                           repr(tuple(input_names)), repr(env), cache.package_digest(),
                           *parts())


@dataclass
class CompiledFunction:
    """A function compiled for fixed argument shapes and dtypes.

        >>> cf = nnjit.jit(f).lower(x, w)      # or nnjit.compile(f, x, w)
        >>> cf(x, w)                           # runs the native code
        >>> print(cf.ir("input"))              # the IR after any stage; cf.stages() lists them
        >>> print(cf.ir("plan_memory"))        # kernel IR with every buffer placed
    """

    traced: Traced
    options: Options
    _stage_list: list[Stage] | None     # None: loaded warm, the stages run when first asked for
    executable: Any
    signature: Signature
    _lazy: "Callable[[], tuple[Any, list[Stage]]] | None" = None
    _in_types: tuple = field(init=False)
    _labels: list = field(init=False)
    _donated: frozenset = field(init=False)

    def __post_init__(self):
        self._in_types = self.traced.graph.input_types
        self._labels = leaf_labels(self.traced.in_tree, self.traced.arg_names)
        self._donated = frozenset(i for _, i in getattr(self.executable, "donated", ()))
        # What a leaf must be to skip the full check: (shape, dtype, must be writable).
        self._fast = [(t.shape, np.dtype(t.dtype.np), k in self._donated)
                      for k, t in enumerate(self._in_types)]

    @property
    def stages_(self) -> list[Stage]:
        """Every stage the graph went through (run now if this function was loaded warm)."""
        if self._stage_list is None:
            self._stage_list = self._lazy()[1]
        return self._stage_list

    @property
    def graph(self) -> Graph:
        """The graph after the last graph pass (what codegen lowered)."""
        return next(s.graph for s in reversed(self.stages_) if isinstance(s.graph, Graph))

    @property
    def program(self) -> Program | None:
        """The final kernel-IR Program (None for the interp backend, which runs the graph)."""
        last = self.stages_[-1].graph
        return last if isinstance(last, Program) else None

    # -- calling ----------------------------------------------------------------------------
    def flat_args(self, args: Sequence[Any]) -> list:
        """Check `args` against the signature (structure, each leaf's shape and dtype, memory
        that native code can use) and return the leaves as arrays: the one argument check.
        Arguments exactly like the compiled ones (the usual training loop) take a fast path
        of a few microseconds; anything else gets the full check and its error messages."""
        leaves = self.fast_leaves(args)
        return leaves if leaves is not None else self._checked_args(args)

    def fast_leaves(self, args: Sequence[Any]) -> list | None:
        """The leaves of `args` if they are exactly like the compiled arguments: the same
        structure, and numpy arrays (or numpy scalars) of the compiled shapes and dtypes whose
        memory native code can use as it is; else None (`flat_args` then checks in full)."""
        leaves: list = []
        if not (_match(self.traced.in_tree, tuple(args), leaves)
                and len(leaves) == len(self._fast)):
            return None
        for k, (x, (shape, dt, writable)) in enumerate(zip(leaves, self._fast)):
            if isinstance(x, np.generic) and x.dtype is dt and not shape and not writable:
                leaves[k] = np.asarray(x)            # a numpy scalar: seed, step, lr
            elif not (type(x) is np.ndarray and x.dtype is dt and x.shape == shape
                      and x.flags.c_contiguous and x.flags.aligned
                      and (not writable or x.flags.writeable)):
                return None
        return leaves

    def _checked_args(self, args: Sequence[Any]) -> list:
        leaves, tree = flatten_with_paths(tuple(args))
        fn = self.traced.graph.name
        if tree != self.traced.in_tree:
            names = self.traced.arg_names
            raise ArgumentError(nested_number_lists(fn, args, names) or
                                f"{fn}: argument structure differs from the compiled one: "
                                f"{structure_change(self.traced.in_tree, tree, names)}")
        out = []
        for k, ((_, x), want, label) in enumerate(zip(leaves, self._in_types, self._labels)):
            try:
                got = leaf_type(x, label)
            except TypeError as e:
                raise ArgumentError(f"{fn}: argument {e}") from None
            if got != want:
                raise ArgumentError(f"{fn}: argument {label} must be {want}, got {got}")
            a = to_array(x, want)
            if isinstance(a, np.ndarray):
                if not a.flags.aligned:
                    raise ArgumentError(f"{fn}: argument {label} is a misaligned array (copy "
                                        "it with np.array(x))")
                if k in self._donated and not a.flags.writeable:
                    raise ArgumentError(f"{fn}: donated argument {label} must be writable")
            elif not _dense_device_array(a):
                raise ArgumentError(f"{fn}: argument {label} is a non-contiguous device array "
                                    "(copy it into a contiguous one)")
            out.append(a)
        return out

    def _flat_outs(self, out, args: list) -> list[np.ndarray]:
        leaves, tree = flatten_with_paths(out)
        fn = self.traced.graph.name
        if tree != self.traced.out_tree:
            raise ArgumentError(f"{fn}: out has structure {tree}, the results have "
                                f"{self.traced.out_tree}")
        outs = []
        for j, ((path, o), spec) in enumerate(zip(leaves, self.signature.outputs)):
            label = f"out{path or f'[{j}]'}"
            if not isinstance(o, np.ndarray):
                raise ArgumentError(f"{fn}: {label} must be a numpy array, got "
                                    f"{type(o).__name__}")
            if o.dtype != spec.dtype or o.shape != spec.shape:
                raise ArgumentError(f"{fn}: {label} must be a C-contiguous {spec} array, got "
                                    f"{o.dtype.name}[{','.join(map(str, o.shape))}]")
            if not (o.flags.c_contiguous and o.flags.aligned and o.flags.writeable):
                raise ArgumentError(f"{fn}: {label} must be a writable, aligned, C-contiguous "
                                    "array")
            if any(isinstance(a, np.ndarray) and np.may_share_memory(o, a) for a in args):
                raise ArgumentError(f"{fn}: {label} overlaps an argument")
            outs.append(o)
        return outs

    def __call__(self, *args, out=None):
        """Run on `args`. `out` (a pytree shaped like the results, of preallocated arrays)
        receives the results instead of fresh arrays: reusing memory avoids the page faults
        of a fresh large allocation on every call."""
        return self.run_flat(self.flat_args(args), out)

    def run_flat(self, flat: list, out=None):
        """Run on leaves `flat_args` (or `fast_leaves`) returned; `out` as for a call."""
        outs = None if out is None else self._flat_outs(out, flat)
        return unflatten(self.traced.out_tree, self.executable(flat, outs))

    # -- inspection -------------------------------------------------------------------------
    def stages(self) -> list[str]:
        return [s.name for s in self.stages_]

    def ir(self, stage: str | None = None) -> str:
        """The IR text after stage `stage` (default: the final graph)."""
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
        """The kernel-IR program and its memory plan. For the interp backend (which runs the
        graph) it is what the CPU codegen stages would make of the final graph."""
        program = self.program
        if program is None:
            return lower_graph(self.graph, donate=self.options.donate)
        return _Lowered(program, program.plan)

    def memory_plan(self) -> MemoryPlan:
        """The arena layout: `print(cf.memory_plan().table())`; see also `memory_svg()`. Its
        `total_bytes` is everything the executable allocates (temporaries, and the backend's
        workspace, status word, constants and staging by purpose)."""
        plan = self.lowered().plan
        results = sum(s.nbytes for s in self.signature.outputs)
        return plan.with_extras(self.executable.extras, results)

    def memory_svg(self) -> str:
        """The memory plan as an SVG timeline (buffers labelled, kernel ticks named)."""
        names = [k.name for k in self.lowered().program.kernels]
        return memory_svg(self.memory_plan(), f"@{self.graph.name}", names)

    def kernels(self) -> list[str]:
        """One line per kernel: name, kind and the source line it came from."""
        return [f"{k.name} [{type(k).__name__}] {k.src}" for k in self.lowered().program.kernels]

    def profile(self, *args, repeats: int = 7, trace: str | None = None):
        """Per kernel: median time, share, bytes moved, GFLOP/s, fraction of this machine's
        peak and the user lines it came from, plus Python's dispatch overhead (see
        `nnjit.runtime.profile`); `trace="trace.json"` also writes a Chrome trace."""
        return profile_call(self, args, repeats, trace)

    def to_dot(self, detail: bool | None = None) -> str:
        """The final graph as Graphviz DOT: every op, each kernel one cluster (`detail=True`),
        or one box per kernel (False); None picks by size (`runtime.viz.DETAIL_MAX_NODES`)."""
        return to_dot(self.graph, detail)

    def to_html(self, profile=None, detail: bool | None = None) -> str:
        """A self-contained interactive page: the picture (pan, zoom), and per kernel its graph
        IR, kernel IR and, given `profile=cf.profile(*args)`, its time. Needs Graphviz."""
        return to_html(self, profile, detail)

    def _text(self, what: str) -> str:
        texts = self.executable.inspect()
        if what not in texts:
            have = ", ".join(texts) or "none"
            raise NnjitError(f"the {self.options.backend} backend has no {what} (it shows: "
                             f"{have}); compile with backend='llvm' or 'cuda'")
        return texts[what]()

    def kernel_ir(self) -> str:
        """The kernel-IR Program the backend rendered."""
        return self._text("kernel_ir")

    def llvm_ir(self, optimized: bool = False) -> str:
        """The LLVM module, as rendered or after the optimization pipeline (llvm backend)."""
        return self._text("llvm_ir_optimized" if optimized else "llvm_ir")

    def asm(self) -> str:
        """Host assembly (llvm backend)."""
        return self._text("asm")

    def cuda_source(self) -> str:
        """The generated Numba CUDA kernels' Python source (cuda backend)."""
        return self._text("cuda_source")

    def export(self, path) -> list[str]:
        """Write `path` (.o or .so) and `<stem>.h`: the function as a C library (llvm backend)."""
        if self.options.backend != "llvm":
            raise NnjitError(f"export needs backend='llvm', not {self.options.backend!r}")
        from ..backends.llvm import aot  # llvmlite loads with the llvm backend, not nnjit

        return aot.export(self.executable, path)


def _match(td, t, leaves: list) -> bool:
    """Append `t`'s leaves if its structure is exactly `td` (cheaply: dict keys by lookup, no
    sorting); False as soon as it differs."""
    kind = td.kind
    if kind == "leaf":
        leaves.append(t)
        return True
    if kind == "dict":
        if type(t) is not dict or len(t) != len(td.meta):
            return False
        try:
            return all(_match(c, t[k], leaves) for k, c in zip(td.meta, td.children))
        except KeyError:
            return False
    if kind == "none":
        return t is None
    want = {"tuple": tuple, "list": list}.get(kind)
    if want is None or type(t) is not want or len(t) != len(td.children):
        return False          # namedtuples take the full path
    return all(_match(c, x, leaves) for c, x in zip(td.children, t))


def _dense_device_array(a) -> bool:
    """Whether a GPU array (numba's, or anything with the CUDA array interface) is C-contiguous."""
    if hasattr(a, "is_c_contiguous"):
        return bool(a.is_c_contiguous())
    cai = a.__cuda_array_interface__
    strides, shape = cai.get("strides"), tuple(cai["shape"])
    if strides is None:
        return True
    want, step = [], np.dtype(cai["typestr"]).itemsize
    for d in reversed(shape):
        want.append(step)
        step *= d
    return all(s == w for s, w, d in zip(strides, reversed(want), shape) if d != 1)


@dataclass(frozen=True)
class _Lowered:
    program: Program
    plan: MemoryPlan


@dataclass(frozen=True)
class FusionReport:
    """What the fusion pass did: `groups` (kernel index, template, ops, source line) and
    `decisions` (each FusionDecision: rule, producer, fused or not, reason, bytes saved)."""

    groups: tuple[tuple[int, str, tuple[str, ...], str], ...]
    decisions: tuple

    @staticmethod
    def of(g: Graph) -> "FusionReport":
        groups = []
        for k, n in enumerate(g.nodes):
            if n.op == Op.CONST:
                continue
            if n.op == Op.FUSION:
                members = [m for m in n.attrs["body"].nodes if m.op != Op.CONST]
                kind = n.attrs["kind"]
            else:
                members, kind = [n], "single"
            # every user line (and module) the kernel computes, in program order
            where = "; ".join(dict.fromkeys(str(m.loc) for m in members if m.loc))
            groups.append((k, kind, tuple(m.op.value for m in members), where))
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
    """`traced` compiled for `options`: from a warm-start cache entry when there is one (see
    `warm_key`), else through every stage (and then stored for the next process)."""
    names = leaf_labels(traced.in_tree, traced.arg_names)
    key = warm_key(traced.graph, options, names)
    if key is not None:
        sig = signature(traced.graph, names)
        lazy = _Once(lambda: run_stages(traced.graph, options))
        exe = get_backend(options.backend).load_warm(key, sig, lambda: lazy()[0])
        if exe is not None:
            return CompiledFunction(traced, options, None, exe, sig, lazy)
    executable, stages, sig = compile_graph(traced.graph, options, input_names=names,
                                            warm_key=key)
    return CompiledFunction(traced, options, stages, executable, sig)


class _Once:
    """`fn()` computed on the first call and remembered."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn, self.done, self.value = fn, False, None

    def __call__(self) -> Any:
        if not self.done:
            self.value, self.done = self.fn(), True
        return self.value
