"""The one small protocol every backend implements, so the runtime drives them all alike.

    backend = get_backend("llvm")
    stages = program_stages(backend.schedule(options), donate,   # when backend.lowers
                            mapping=backend.mapping(options))
    exe = backend.compile_program(program, signature)             # a Program (or, for interp,
    outs = exe(args, outs=None)                                   #  the Graph itself)
    texts = exe.inspect()                                         # {"llvm_ir": fn, "asm": fn}

`exe(args, outs)` takes arrays the runtime has already validated against the signature (one
place checks arguments: `nnjit.runtime.compiled`); `outs`, when given, are the arrays to write
the results into. `inspect()` names the texts a backend can show (each a zero-argument function,
computed on demand). `extras` lists what the executable allocates besides the planned
temporaries (purpose, bytes), which the memory plan reports.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .signature import Signature


class Executable(Protocol):
    extras: tuple[tuple[str, int], ...]

    def __call__(self, args: Sequence[Any], outs: Sequence[np.ndarray] | None = None
                 ) -> list[Any]: ...

    def inspect(self) -> dict[str, Callable[[], str]]: ...


class Backend(Protocol):
    name: str
    lowers: bool        # compiles kernel-IR Programs (native) rather than running the Graph

    def schedule(self, options) -> list[tuple[str, Callable]]:
        """The target's named Program -> Program stages, run between lowering and planning."""

    def mapping(self, options) -> list[tuple[str, Callable]]:
        """Its stages after planning (the GPU's launch mapping)."""

    def compile_program(self, program, signature: Signature) -> Executable: ...


__all__ = ["Backend", "Executable"]
