"""The CUDA backend: kernel IR with its GEMM operands inlined (`codegen.inline`) and mapped to
GPU launches (`codegen.gpu.map_to_gpu`), rendered as Python source of Numba `@cuda.jit` kernels
(`render`, `gemm`, `source`), launched in order from one device arena (`executable`). Runs on
an NVIDIA GPU, or under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1).

    >>> f = nnjit.jit(fn, backend="cuda")
    >>> f(x)                          # numpy in/out; numba device arrays stay on the device
    >>> print(f.lower(x).cuda_source())
"""
from __future__ import annotations

import functools
import os
import sys

from ...ir import NnjitError


class CudaUnavailableError(NnjitError):
    """Neither a usable GPU nor the CUDA simulator is available."""


def simulating() -> bool:
    from numba.cuda.core import config  # noqa: PLC0415

    return bool(config.ENABLE_CUDASIM)


def check_available() -> None:
    """Raise CudaUnavailableError with what to do when numba cannot run CUDA kernels here."""
    try:
        from numba import cuda  # noqa: PLC0415
    except ImportError as e:
        raise CudaUnavailableError(f"the cuda backend needs numba-cuda ({e}); install it with "
                                   f"`pip install numba-cuda`") from None
    if not cuda.is_available():
        raise CudaUnavailableError(
            "the cuda backend found no usable GPU: numba.cuda.is_available() is False (no "
            "NVIDIA driver or device). Run on a machine with a GPU, or use Numba's CUDA "
            "simulator by setting NUMBA_ENABLE_CUDASIM=1 before numba is imported (slow; for "
            "tests on small shapes)")


def target():
    """The launch geometry for this machine: the simulator runs each thread as a Python
    thread, so it gets small blocks."""
    from ...codegen.gpu import SIM_TARGET, Target  # noqa: PLC0415

    return SIM_TARGET if simulating() else Target()


def gpu_program(program, tgt=None):
    """`program` (kernel IR) with its GEMM operands inlined and mapped to GPU launches for
    `tgt` (default: this machine's `target()`): the backend's two mapping stages at once."""
    from ...codegen.gpu import map_to_gpu  # noqa: PLC0415
    from ...codegen.inline import inline_operands  # noqa: PLC0415

    return map_to_gpu(inline_operands(program), tgt or target())


def compile_program(program, inputs, outputs, tgt=None, mapped: bool = False):
    """Render and load `program` (a kernel-IR Program, mapped to the GPU unless `mapped`)."""
    from .executable import CudaExecutable  # noqa: PLC0415
    from .render import render  # noqa: PLC0415

    check_available()
    rendered = render(program if mapped else gpu_program(program, tgt))
    if os.environ.get("NNJIT_DEBUG", "").strip() == "2":
        print(f"--- nnjit GPU form ---\n{rendered.program}\n--- nnjit CUDA source ---\n"
              f"{rendered.source}", file=sys.stderr)
    return CudaExecutable(program, rendered, list(inputs), list(outputs),
                          simulator=simulating())


class CudaBackend:
    name = "cuda"
    lowers = True

    def schedule(self, options) -> list:
        """Column sums get the CPU's tree over rows; row sums are split over a block's threads,
        each adding its share in cascaded partials (see codegen.gpu)."""
        from ...codegen.accumulate import block_sums  # noqa: PLC0415

        check_available()
        return [("block_sums", functools.partial(block_sums, rows=False))]

    def mapping(self, options) -> list:
        """After planning: GEMM operand producers inlined, then every kernel mapped to GPU
        launches (grid/block loops, barriers, shared memory) for this machine."""
        from ...codegen.gpu import map_to_gpu  # noqa: PLC0415
        from ...codegen.inline import inline_operands  # noqa: PLC0415

        return [("inline_operands", inline_operands),
                ("map_to_gpu", functools.partial(map_to_gpu, target=target()))]

    def compile_program(self, program, signature):
        return compile_program(program, signature.inputs, signature.outputs, mapped=True)


BACKEND = CudaBackend()
NAME = BACKEND.name
