"""Backends turn a planned Graph into something callable. Each exposes `NAME` and
`compile(graph, options) -> executable`, where `executable(list_of_arrays) -> list_of_arrays`."""
from __future__ import annotations

import importlib

BACKENDS = ("interp", "llvm", "cuda")


def get_backend(name: str):
    if name not in BACKENDS:
        from ..ir import NnjitError

        raise NnjitError(f"unknown backend {name!r} (available: {', '.join(BACKENDS)})")
    return importlib.import_module(f"{__name__}.{name}")
