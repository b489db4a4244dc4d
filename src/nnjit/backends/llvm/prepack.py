"""`prepack_constants`: GEMM operands that are constants (inference weights: `jit(f,
constants=...)`, closed-over arrays, ONNX initializers) packed once, at compile time, into the
panel layout the GEMM packs into its workspace, so no call re-packs (or re-transposes) them.

Guarantees afterwards: every top-level or scan-body GEMM whose A or B is a constant buffer,
the same for every batch, reads it from a new constant holding `gemm.panels(dtype, operand)`
of it (`a_packed` / `b_packed` set, the view's offset and strides zeroed) and is rendered as a
call to `nnjit_gemm_<dtype>_prepacked`; a constant no kernel reads any more is dropped. Results
are unchanged: packing copies elements (zero padding lies outside the product). NNJIT_PREPACK=0
turns the stage off (to measure what it buys).

    B = c1[+0; batch*() + r*512 + c*1]      ->      B = c1p packed(kc=256, width=64)
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ...codegen.analysis import accesses
from ...ir import DType
from ...ir.kernel import Buffer, BufKind, GemmKernel, MatView, Panels, Program, ScanKernel
from . import gemm

_FLOATS = (DType.F32, DType.F64)


def prepack_enabled() -> bool:
    return os.environ.get("NNJIT_PREPACK", "1").strip() != "0"


def prepack_constants(program: Program) -> Program:
    """`program` with its constant GEMM operands pre-packed (see the module docstring)."""
    if not prepack_enabled():
        return program
    return _Prepacker(program).run()


class _Prepacker:
    def __init__(self, program: Program):
        self.program = program
        self.bufs = {b.name: b for b in program.buffers}
        self.added: dict[tuple, Buffer] = {}     # (buffer, view, panels) -> its packed copy

    def run(self) -> Program:
        kernels = tuple(self.kernel(k) for k in self.program.kernels)
        if not self.added and kernels == self.program.kernels:
            return self.program
        used = _used_buffers(self.program, kernels)
        buffers = tuple(b for b in self.program.buffers
                        if b.kind != BufKind.CONST or b.name in used) + tuple(self.added.values())
        return dataclasses.replace(self.program, buffers=buffers, kernels=kernels)

    def kernel(self, k):
        if isinstance(k, ScanKernel):
            return dataclasses.replace(k, body=prepack_constants(k.body))
        if not isinstance(k, GemmKernel) or not self.packable(k):
            return k
        a, a_packed = self.operand(k, k.a, k.a_packed, "a", k.m, k.k)
        b, b_packed = self.operand(k, k.b, k.b_packed, "b", k.k, k.n)
        if a_packed is k.a_packed and b_packed is k.b_packed:
            return k
        epi_reads = accesses(k.epilogue)[0] if k.epilogue else ()
        reads = tuple(dict.fromkeys((a.buf, b.buf) + epi_reads))
        return dataclasses.replace(k, a=a, b=b, a_packed=a_packed, b_packed=b_packed,
                                   reads=reads)

    def packable(self, k: GemmKernel) -> bool:
        return (k.dtype in _FLOATS and not k.inlined and min(k.m, k.n, k.k) > 0)

    def operand(self, k: GemmKernel, v: MatView, packed: Panels | None, which: str,
                rows: int, cols: int) -> tuple[MatView, Panels | None]:
        """The view of operand `which` (rows x cols) and its packing: a packed copy if it is
        a constant shared by every batch, else as it was."""
        buf = self.bufs.get(v.buf)
        if (packed is not None or buf is None or buf.kind != BufKind.CONST or buf.value is None
                or buf.dtype != k.dtype or any(v.batch_strides)):
            return v, packed
        panels = gemm.panels(k.dtype.np, which)
        key = (v.buf, v.offset, v.row_stride, v.col_stride, rows, cols, panels)
        if key not in self.added:
            flat = np.ascontiguousarray(buf.value).reshape(-1)
            r = np.arange(rows)[:, None] * v.row_stride + np.arange(cols)[None, :] * v.col_stride
            at = v.offset + r
            if at.min() < 0 or at.max() >= flat.size:
                return v, packed           # not a view inside the constant: left to the check
            matrix = flat[at]                              # rows x cols, as the GEMM reads it
            data = panels.pack(matrix if which == "b" else matrix.T)
            self.added[key] = Buffer(self._fresh(v.buf), buf.dtype, data.size, BufKind.CONST,
                                     value=data)
        return MatView(self.added[key].name, 0, (0,) * len(v.batch_strides), 0, 0), panels

    def _fresh(self, base: str) -> str:
        taken = set(self.bufs) | {b.name for b in self.added.values()}
        name, i = f"{base}p", 1
        while name in taken:
            name, i = f"{base}p{i}", i + 1
        return name


def _used_buffers(program: Program, kernels) -> set[str]:
    """Every buffer a kernel, the signature or an alias still names."""
    used = set(program.inputs) | set(program.outputs)
    used |= {b.base for b in program.buffers if b.base}
    for k in kernels:
        used |= set(k.reads) | set(k.writes)
        used |= {getattr(k, f) for f in ("src_buf", "dst_buf") if hasattr(k, f)}
        if isinstance(k, ScanKernel):
            used |= set(k.const_bufs + k.init_bufs + k.xs_bufs)
    return used
