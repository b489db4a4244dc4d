"""Compile every kernel of rendered CUDA programs to PTX with Numba's real CUDA compiler (typing,
lowering, NVVM), without a GPU: the check that the generated source is valid for a device and
not only for the simulator. Needs libnvvm (pip `nvidia-nvvm`, `nvidia-cuda-nvrtc`; CUDA_HOME
pointing at them). Run in a process WITHOUT NUMBA_ENABLE_CUDASIM:

    python -m tests.backends.cuda_ptx      # prints "ok N kernels" or the first failure
"""
from __future__ import annotations

import os
import sys

import numpy as np


def nvvm_available() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False
    try:
        from numba import cuda, types

        def probe(a):
            a[0] = 1.0

        cuda.compile_ptx(probe, (types.float32[::1],), cc=(8, 0))
        return True
    except Exception:
        return False


def _fake_device():
    """Device functions ask the current device for its compute capability; there is none."""
    import numba.cuda.dispatcher as d

    class _Dev:
        compute_capability = (8, 0)

    d.get_current_device = lambda: _Dev()


def check_program(program, tgt=None) -> int:
    """Compile every launched kernel of `program` to PTX; returns the number compiled."""
    from numba import cuda, types
    from numba.np.numpy_support import from_dtype

    from nnjit.backends.cuda import gpu_program
    from nnjit.backends.cuda.executable import load_module
    from nnjit.backends.cuda.render import function_name, render
    from nnjit.backends.cuda.scan import scan_params
    from nnjit.codegen.gpu import Target
    from nnjit.ir.kernel import GpuKernel

    _fake_device()
    rendered = render(gpu_program(program, tgt or Target()))
    ns = load_module(rendered.source, program.name)
    count = 0

    def walk(p):
        nonlocal count
        dtypes = {b.name: b.dtype.np for b in p.buffers}
        for k in p.kernels:
            if not isinstance(k, GpuKernel) and not k.block:
                walk(k.body)
                continue
            if isinstance(k, GpuKernel):
                params = [dtypes[a] for a in k.params]
            else:                       # a scan looped on the device: one kernel
                inner = {b.name: b.dtype.np for b in k.body.buffers}
                params = [(dtypes if role == "outer" else inner)[a]
                          for role, a in scan_params(k)]
            sig = tuple(types.Array(from_dtype(np.dtype(d)), 1, "C") for d in params)
            try:
                cuda.compile_ptx(ns[function_name(k)].py_func, sig, cc=(8, 0))
            except Exception as e:
                raise AssertionError(f"{k.name} does not compile for CUDA: {e}\n"
                                     f"{rendered.source}") from e
            count += 1

    walk(rendered.program)
    return count


def _programs():
    """Lowered graphs covering every kernel shape the renderer makes."""
    import nnjit
    from nnjit.codegen import lower_graph
    from nnjit.codegen.gpu import Target
    from tests.backends.test_cuda_render import (F32, F64, I32, I64, float_ops_program,
                                                 int_ops_program, ptx_cases)

    for dt in (F32, F64):
        yield float_ops_program(dt), None
    for dt in (I32, I64):
        yield int_ops_program(dt), None
    for fn, args in ptx_cases():
        g = nnjit.compile(fn, *args, backend="interp").graph
        yield lower_graph(g).program, None
        yield lower_graph(g).program, Target(reduce_min=1, gemm_tiled_min=0)


def main() -> int:
    n = 0
    for program, tgt in _programs():
        n += check_program(program, tgt)
    print(f"ok {n} kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
