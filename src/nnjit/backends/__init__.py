"""Backends turn what the pipeline produced into something callable, through one protocol
(`base.Backend`): `schedule(options)` (their Program stages), `compile_program(program,
signature) -> Executable`, `Executable(args, outs)` and `inspect()`."""
from __future__ import annotations

import importlib
import os

from ..ir import NnjitError

BACKENDS = ("interp", "llvm", "cuda")
# What `jit` compiles for when no backend is named: native CPU code, as JAX and torch.compile
# compile by default. The interpreter stays the reference the others are tested against.
DEFAULT_BACKEND = "llvm"


def default_backend() -> str:
    """The backend `jit` uses when none is named: $NNJIT_BACKEND if set, else llvm. An unknown
    value is an error listing the valid ones (a typo must not fall back silently)."""
    name = os.environ.get("NNJIT_BACKEND", "").strip()
    if not name:
        return DEFAULT_BACKEND
    if name not in BACKENDS:
        raise NnjitError(f"NNJIT_BACKEND={name!r} is not a backend; valid: {', '.join(BACKENDS)}")
    return name


def resolve_backend(name: str | None) -> str:
    """`name` checked, or the default backend when None."""
    if name is None:
        return default_backend()
    if name not in BACKENDS:
        raise NnjitError(f"unknown backend {name!r} (available: {', '.join(BACKENDS)})")
    return name


def get_backend(name: str):
    """The backend object called `name` (its module is imported on first use)."""
    if name not in BACKENDS:
        raise NnjitError(f"unknown backend {name!r} (available: {', '.join(BACKENDS)})")
    return importlib.import_module(f"{__name__}.{name}").BACKEND
