"""A Program in GPU form (`nnjit.codegen.gpu.map_to_gpu`) -> the Python source of Numba
`@cuda.jit` kernels: one function per GpuKernel (`function_name`), scan bodies' included, and
one per scan looped on the device (`scan`); the executable launches them in program order.
Scheduling is decided before this: here each kernel-IR construct has one rendering (GPU loops
as strided `range`s, `cuda.syncthreads()`, `cuda.atomic.add`, a shared-memory tree for
`BlockReduce`); GEMM launches expand in `gemm`.

Identical subexpressions are rendered once per scope into `_tN` locals; a store or an
assignment forgets the values that depend on it (the LLVM renderer does the same).

NOTE: the text is compiled with Python's `compile()`, but it is not user input: every identifier
comes from our own IR (sanitized to [A-Za-z0-9_] and prefixed), constants are rendered from typed
numbers, and the only user text (source locations) goes into comments, escaped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ...codegen.analysis import deps, facts, loops_in
from ...ir import CompileError
from ...ir.kernel import (
    Assign,
    AtomicAdd,
    Barrier,
    BlockReduce,
    Call,
    Const,
    Expr,
    GpuKernel,
    If,
    Let,
    Load,
    Loop,
    LoopKind,
    Program,
    ScanKernel,
    Stmt,
    Store,
    Var,
)
from . import gemm
from .scan import RESERVED as SCAN_RESERVED
from .scan import render_scan
from .source import NP_NAME, PREAMBLE, Namer, comment, literal, template


@dataclass(frozen=True)
class Rendered:
    source: str
    program: Program        # the GPU-form program whose GpuKernels the source defines


def function_name(k: GpuKernel | ScanKernel) -> str:
    """The Python name of GpuKernel `k`, or of a scan looped on the device (names are unique
    identifiers in GPU form)."""
    return "k_" + k.name


def render(program: Program) -> Rendered:
    """The module source for `program`, which must be in GPU form."""
    chunks: list[str] = []
    _collect(program, chunks)
    return Rendered(PREAMBLE + "\n" + "\n".join(chunks), program)


def _collect(p: Program, chunks: list[str]) -> None:
    for k in p.kernels:
        if isinstance(k, GpuKernel):
            chunks.append(_kernel(k))
        elif isinstance(k, ScanKernel) and k.block:
            em = Emitter({}, Namer(_RESERVED + list(SCAN_RESERVED)), indent=1)
            chunks.append(render_scan(k, function_name(k), em,
                                      {b.name: b.size for b in p.buffers}))
        elif isinstance(k, ScanKernel):
            _collect(k.body, chunks)
        else:
            raise CompileError(f"{p.name}: kernel {k.name} is not in GPU form (run "
                               f"nnjit.codegen.gpu.map_to_gpu first)")


_RESERVED = ["math", "cuda", "float32", "float64", "int32", "int64", "uint64", "bool_", "_i",
             "_n", "_f", "_tid", "_nt", "_row", "_s", "_tx", "_ty", "_z", "_col", "_acc"]


def _kernel(k: GpuKernel) -> str:
    names = Namer(_RESERVED)
    params = {b: names.fresh("b_", b) for b in k.params}
    em = Emitter(params, names, indent=1)
    if k.gemm is not None:
        gemm.render(k, em)
    else:
        arrays = {b.dtype: f"_sh_{NP_NAME[b.dtype]}" for b in k.shared}
        em.shared = {b.name: (arrays[b.dtype], b.offset // b.dtype.itemsize) for b in k.shared}
        if k.shared or any(lp.kind == LoopKind.THREADS for lp in loops_in(k.body)):
            em.line("_tid = cuda.threadIdx.x")
            em.line("_nt = cuda.blockDim.x")
        em.stmts(k.body)
        em.lines[:0] = [f"    {py} = cuda.shared.array(0, {NP_NAME[dt]})"
                        for dt, py in arrays.items()]
    head = [f"# {comment(k.src)}"] if k.src else []
    head += ["@cuda.jit", f"def {function_name(k)}({', '.join(params.values())}):"]
    return "\n".join(head + em.lines) + "\n"


_RANGE = {LoopKind.GRID: "range(_i, {}, _n)", LoopKind.THREADS: "range(_tid, {}, _nt)",
          LoopKind.BLOCKS: "range(cuda.blockIdx.x, {}, cuda.gridDim.x)"}


class Emitter:
    """Writes the body of one kernel function: statements as Python lines at the current
    indentation, expressions as `_tN` locals (computed once per scope)."""

    def __init__(self, bufs: dict[str, str], names: Namer, indent: int = 1):
        self.bufs = bufs                 # IR buffer name -> Python parameter name
        self.shared: dict[str, tuple[str, int]] = {}   # SHARED buffer -> (array, first element)
        self.names = names
        self.lines: list[str] = []
        self.depth = indent
        self.vars: list[dict[str, str]] = [{}]    # IR var name -> Python local, per scope
        self.memo: list[dict[Expr, str]] = [{}]
        self._deps: dict = {}
        self._starts: list[int] = []

    # -- output -----------------------------------------------------------------------------
    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def push(self) -> None:
        """Open an indented block (and a scope for names and cached values)."""
        self.depth += 1
        self.vars.append({})
        self.memo.append({})
        self._starts.append(len(self.lines))

    def pop(self) -> None:
        if self._starts.pop() == len(self.lines):
            self.line("pass")
        self.depth -= 1
        self.vars.pop()
        self.memo.pop()

    def bind(self, ir_name: str, py_name: str) -> None:
        self.vars[-1][ir_name] = py_name

    def forget(self, keys: Iterable) -> None:
        keys = set(keys)
        for scope in self.memo:
            for e in [e for e in scope if deps(e, self._deps) & keys]:
                del scope[e]

    # -- expressions ---------------------------------------------------------------------------
    def var(self, name: str) -> str:
        for scope in reversed(self.vars):
            if name in scope:
                return scope[name]
        raise CompileError(f"variable {name!r} is used before it is declared")

    def expr(self, e: Expr) -> str:
        if isinstance(e, Const):
            return literal(e)
        if isinstance(e, Var):
            return self.var(e.name)
        for scope in reversed(self.memo):
            if e in scope:
                return scope[e]
        if isinstance(e, Load):
            text = f"{self.buf(e.buf)}[{self.expr(e.index)}]"
        elif isinstance(e, Call):
            args = [self.expr(a) for a in e.args]
            text = template(e).format(*args, T=NP_NAME[e.dtype])
        else:
            raise CompileError(f"unknown expression {e!r}")
        name = self.names.fresh("_t")
        self.line(f"{name} = {text}")
        self.memo[-1][e] = name
        return name

    def buf(self, name: str) -> str:
        try:
            return self.bufs[name]
        except KeyError:
            raise CompileError(f"kernel uses buffer {name!r}, which it was not given") from None

    # -- statements ----------------------------------------------------------------------------
    def stmts(self, stmts: Iterable[Stmt]) -> None:
        for s in stmts:
            self.stmt(s)

    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Loop):
            if s.kind == LoopKind.THREADS and s.extent == 1:     # "thread 0 only"
                self.block("if _tid == 0:", s.body, (s.var, "0"))
                return
            if s.kind == LoopKind.GRID:
                self.line("_i = cuda.grid(1)")
                self.line("_n = cuda.gridsize(1)")
            self.loop(s.var, _RANGE.get(s.kind, "range({})").format(s.extent), s.body)
        elif isinstance(s, If):
            self.block(f"if {self.expr(s.cond)}:", s.body)
        elif isinstance(s, (Store, AtomicAdd)):
            index, value = self.expr(s.index), self.expr(s.value)
            b = self.buf(s.buf)
            self.line(f"{b}[{index}] = {value}" if isinstance(s, Store) else
                      f"cuda.atomic.add({b}, {index}, {value})")
            self.forget({("b", s.buf)})
        elif isinstance(s, (Let, Assign)):
            value = self.expr(s.value)
            self.forget({("v", s.var.name)})
            if isinstance(s, Let):
                self.bind(s.var.name, self.names.fresh("v_", s.var.name))
            self.line(f"{self.var(s.var.name)} = {value}")
        elif isinstance(s, Barrier):
            self.line("cuda.syncthreads()")
        elif isinstance(s, BlockReduce):
            self.block_reduce(s)
        else:
            raise CompileError(f"unknown statement {s!r}")

    def block(self, header: str, body, bind: tuple[str, str] | None = None) -> None:
        """`header` (a `for` or an `if`) over `body` in a new scope."""
        body = tuple(body)
        self.forget(facts(body).effects)
        self.line(header)
        self.push()
        if bind:
            self.bind(*bind)
        self.stmts(body)
        self.pop()
        self.forget(facts(body).effects)

    def loop(self, var: str, range_text: str, body: Iterable[Stmt]) -> str:
        """`for <var> in <range_text>:` around `body`; returns the variable's Python name."""
        py = self.names.fresh("v_", var)
        self.block(f"for {py} in {range_text}:", body, (var, py))
        return py

    def block_reduce(self, s: BlockReduce) -> None:
        """The block's values of `s.var` combined in a shared-memory tree: halve the active
        threads each step (the block is a power of two), then every thread reads slot 0."""
        sh, base = self.shared[s.scratch]
        v, dt = self.var(s.var.name), s.var.dtype
        comb = template(Call(s.op, (s.var, s.var), dt)).replace("{T}", NP_NAME[dt])
        me, mate = f"{sh}[_tid + {base}]", f"{sh}[_tid + _s + {base}]"
        for text in [f"{me} = {v}", "cuda.syncthreads()", "_s = _nt // 2", "while _s > 0:",
                     "    if _tid < _s:", f"        {me} = {comb.format(me, mate)}",
                     "    cuda.syncthreads()", "    _s //= 2", f"{v} = {sh}[{base}]",
                     "cuda.syncthreads()"]:
            self.line(text)
        self.forget({("v", s.var.name)})
