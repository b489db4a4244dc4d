"""The LLVM CPU backend: kernel IR rendered to one LLVM module (`render`), compiled for the host
with the O2 pipeline, cached on disk, JIT-loaded and called with one native call per invocation
(`executable`); `aot.export` writes the same code as a .o/.so with a C header.

    >>> f = nnjit.jit(fn, backend="llvm")
    >>> f(x)                    # one native call
    >>> f.lower(x).llvm_ir()    # also .asm(), .kernel_ir(), .export("fn.so")
"""
from __future__ import annotations

from ...codegen.accumulate import block_sums
from ...codegen.collective import overlap_collectives
from ..signature import Signature
from .executable import LLVMExecutable, compile_program


class LLVMBackend:
    name = "llvm"
    lowers = True

    def schedule(self, options) -> list:
        """Float sums become trees of bounded partials (leaf loops vectorize into lanes);
        all-reduce waits move down to the first use (the transfer overlaps what is between)."""
        return [("block_sums", block_sums), ("overlap_collectives", overlap_collectives)]

    def mapping(self, options) -> list:
        return []

    def compile_program(self, program, signature: Signature) -> LLVMExecutable:
        return compile_program(program, signature.inputs, signature.outputs)


BACKEND = LLVMBackend()
NAME = BACKEND.name
