"""Running traced code on concrete arrays: a Module or an optimizer called outside `jit`.

The frontend traces; compiling is the layer above it. So the api layer installs its compiler
here when it is imported (`install`), and `eager(fn, name)` gives a function that traces and
compiles `fn` once per signature, with the reference backend.
"""
from __future__ import annotations

from typing import Callable

_compiler: list[Callable] = []


def install(make_jit: Callable[[Callable, str], Callable]) -> None:
    """Called once by nnjit.api: `make_jit(fn, name)` returns a jit-compiled fn."""
    _compiler[:] = [make_jit]


def eager(fn: Callable, name: str) -> Callable:
    if not _compiler:
        raise RuntimeError("nnjit.api is not imported: import nnjit first")
    return _compiler[0](fn, name)
