"""The LLVM CPU backend: kernel IR rendered to one LLVM module (`render`), compiled for the host
with the O2 pipeline, cached on disk, JIT-loaded and called with one native call per invocation
(`executable`); `aot.export` writes the same code as a .o/.so with a C header.

    >>> f = nnjit.jit(fn, backend="llvm")
    >>> f(x)                    # one native call
    >>> f.lower(x).llvm_ir()    # also .asm(), .kernel_ir(), .export("fn.so")
"""
from __future__ import annotations

import llvmlite

from ...codegen.accumulate import block_sums
from ...codegen.collective import overlap_collectives
from ...codegen.split_ranges import split_loop_ranges
from ...codegen.split_reductions import split_full_reductions
from ..signature import Signature
from . import parallel, target
from .executable import LLVMExecutable, compile_program, debug_bounds, load_warm
from .prepack import prepack_constants
from .scan_pack import pack_scan_operands


class LLVMBackend:
    name = "llvm"
    lowers = True

    def schedule(self, options) -> list:
        """Serial loops that test their index against constants (pads, concatenations) run as
        one loop per range those tests agree on; large reductions to one value get a parallel
        pass over chunks first; float sums
        become trees of bounded partials (leaf loops vectorize into lanes); all-reduce waits
        move down to the first use (the transfer overlaps what is between); constant GEMM
        operands are packed once, here, instead of on every call, and a scan's loop-invariant
        ones once per call, before its loop, instead of on every step."""
        return [("split_loop_ranges", split_loop_ranges),
                ("split_full_reductions", split_full_reductions), ("block_sums", block_sums),
                ("overlap_collectives", overlap_collectives),
                ("prepack_constants", prepack_constants),
                ("pack_scan_operands", pack_scan_operands)]

    def mapping(self, options) -> list:
        return []

    def compile_program(self, program, signature: Signature,
                        warm_key: str | None = None) -> LLVMExecutable:
        return compile_program(program, signature.inputs, signature.outputs, warm_key=warm_key)

    # -- warm starts (see runtime.compiled.warm_key) ---------------------------------------------
    def warm_key_parts(self) -> list[str]:
        """What this backend's code depends on besides the graph, options and nnjit's source:
        the host target, the pipeline, the thread count compiled in, the thread pool, bounds traps."""
        return [target.target_id(), target.pipeline_id(), f"llvmlite-{llvmlite.__version__}",
                f"threads={parallel.num_threads()}", f"pool={parallel.threads_available()}",
                f"bounds={debug_bounds()}"]

    def load_warm(self, key: str, signature: Signature, rebuild) -> LLVMExecutable | None:
        return load_warm(key, signature.inputs, signature.outputs, rebuild)


BACKEND = LLVMBackend()
NAME = BACKEND.name
