"""The LLVM CPU backend: kernel IR rendered to one LLVM module (`render`), compiled for the host
with the O3 pipeline, cached on disk, JIT-loaded and called with one native call per invocation
(`executable`); `export` writes the same code as a .o/.so with a C header (`aot`).

    >>> f = nnjit.jit(fn, backend="llvm")
    >>> f(x)                    # one native call
    >>> f.lower(x).llvm_ir()    # also .asm(), .kernel_ir(), .export("fn.so")
"""
from __future__ import annotations

from nnjit.ir import Graph

NAME = "llvm"


def compile(graph: Graph, options=None):  # noqa: A001  (backend protocol)
    """Lower `graph` to kernel IR (once for all native backends) and compile it for this CPU."""
    from nnjit.backends.llvm.executable import compile_program  # noqa: PLC0415
    from nnjit.backends.signature import signature  # noqa: PLC0415
    from nnjit.codegen import lower_graph  # noqa: PLC0415

    from nnjit.codegen.accumulate import block_sums  # noqa: PLC0415

    lowered = lower_graph(graph, donate=tuple(getattr(options, "donate", ())),
                          schedule=block_sums)
    inputs, outputs = signature(graph)
    exe = compile_program(lowered.program, inputs, outputs, plan=lowered.plan)
    exe.lowered = lowered   # what inspection (memory_plan, kernels) reports is what runs
    return exe
