"""The LLVM CPU backend: kernel IR rendered to one LLVM module (`render`), compiled for the host
with the O3 pipeline, cached on disk, JIT-loaded and called with one native call per invocation
(`executable`); `aot.export` writes the same code as a .o/.so with a C header.

    >>> f = nnjit.jit(fn, backend="llvm")
    >>> f(x)                    # one native call
    >>> f.lower(x).llvm_ir()    # also .asm(), .kernel_ir(), .export("fn.so")
"""
from __future__ import annotations

from ...codegen.accumulate import block_sums
from ...codegen.collective import overlap_collectives
from ...codegen.split_reductions import split_full_reductions
from ..signature import Signature
from .executable import LLVMExecutable, compile_program
from .prepack import prepack_constants


class LLVMBackend:
    name = "llvm"
    lowers = True

    def schedule(self, options) -> list:
        """Large reductions to one value get a parallel pass over chunks first; float sums
        become trees of bounded partials (leaf loops vectorize into lanes); all-reduce waits
        move down to the first use (the transfer overlaps what is between); constant GEMM
        operands are packed once, here, instead of on every call."""
        return [("split_full_reductions", split_full_reductions), ("block_sums", block_sums),
                ("overlap_collectives", overlap_collectives),
                ("prepack_constants", prepack_constants)]

    def mapping(self, options) -> list:
        return []

    def compile_program(self, program, signature: Signature) -> LLVMExecutable:
        return compile_program(program, signature.inputs, signature.outputs)


BACKEND = LLVMBackend()
NAME = BACKEND.name
