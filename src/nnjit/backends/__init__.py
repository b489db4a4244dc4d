"""Backends turn what the pipeline produced into something callable, through one protocol
(`base.Backend`): `schedule(options)` (their Program stages), `compile_program(program,
signature) -> Executable`, `Executable(args, outs)` and `inspect()`."""
from __future__ import annotations

import importlib

from ..ir import NnjitError

BACKENDS = ("interp", "llvm", "cuda")


def get_backend(name: str):
    """The backend object called `name` (its module is imported on first use)."""
    if name not in BACKENDS:
        raise NnjitError(f"unknown backend {name!r} (available: {', '.join(BACKENDS)})")
    return importlib.import_module(f"{__name__}.{name}").BACKEND
