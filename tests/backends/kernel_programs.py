"""Hand-built kernel-IR programs for the LLVM backend tests: short constructors for buffers,
loops and programs, and `run` (render + verify the LLVM text + compile + call)."""
from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np

from nnjit.backends.llvm import target
from nnjit.backends.llvm.executable import compile_program
from nnjit.ir import DType
from nnjit.ir.kernel import (Buffer, BufKind, Call, Const, KOp, Load, Loop, LoopKernel, LoopKind,
                             Program, Store, Var)

F32, F64, I32, I64, BOOL = DType.F32, DType.F64, DType.I32, DType.I64, DType.BOOL
I = Var("i")  # noqa: E741  (the usual loop index)


def inp(name: str, dtype: DType, size: int, index: int) -> Buffer:
    return Buffer(name, dtype, size, BufKind.INPUT, index=index)


def out(name: str, dtype: DType, size: int, index: int) -> Buffer:
    return Buffer(name, dtype, size, BufKind.OUTPUT, index=index)


def temp(name: str, dtype: DType, size: int, offset: int) -> Buffer:
    return Buffer(name, dtype, size, BufKind.TEMP, offset=offset)


def c(value, dtype: DType = F32) -> Const:
    return Const(value, dtype)


def call(op: KOp, *args, dtype: DType | None = None, salt: int = 0) -> Call:
    return Call(op, tuple(args), dtype or args[0].dtype, salt)


def add(a, b):
    return call(KOp.ADD, a, b)


def mul(a, b):
    return call(KOp.MUL, a, b)


def ld(buf: str, index, dtype: DType = F32) -> Load:
    return Load(buf, index, dtype)


def idx2(i: str, j: str, cols: int):
    """i * cols + j over i64 loop variables."""
    return add(mul(Var(i), c(cols, I64)), Var(j))


def map_kernel(n: int, value, out_buf: str = "out0", name: str = "k",
               kind: LoopKind = LoopKind.PARALLEL, cost: int = 0) -> LoopKernel:
    """out_buf[i] = value(i) for i in [0, n)."""
    body = (Loop("i", n, (Store(out_buf, I, value(I)),), kind),)
    return LoopKernel(name, body, (), (out_buf,), cost=cost)


def program(kernels, buffers, arena_bytes: int = 0, name: str = "p") -> Program:
    ins = tuple(b.name for b in sorted((b for b in buffers if b.kind == BufKind.INPUT),
                                       key=lambda b: b.index))
    outs = tuple(b.name for b in sorted((b for b in buffers if b.kind == BufKind.OUTPUT),
                                        key=lambda b: b.index))
    return Program(name, tuple(buffers), tuple(kernels), ins, outs, arena_bytes)


def compile_checked(p: Program, nthreads: int | None = None):
    """compile_program, after checking that the rendered LLVM text parses and verifies."""
    exe = compile_program(p, nthreads=nthreads)
    mod = llvm.parse_assembly(exe.llvm_ir())
    mod.verify()
    target.prepare_module(exe.llvm_ir())
    return exe


def run(p: Program, *arrays, nthreads: int | None = None) -> list[np.ndarray]:
    """Compile `p` and call it on flat copies of `arrays`."""
    exe = compile_checked(p, nthreads)
    flat = [np.ascontiguousarray(a, dtype=s.dtype).reshape(s.shape)
            for a, s in zip(arrays, exe.inputs)]
    return exe(flat)
