"""The graph IR: types, the op registry, graphs, the builder, text format and verifier.

This package imports nothing else from nnjit; everything else builds on it.
"""
from . import defs  # noqa: F401  (registers every OpDef)
from .builder import Builder, Sym, register_exclusion, user_loc
from .errors import (
                     ArgumentError,
                     CompileError,
                     IndexOutOfRange,
                     NnjitError,
                     ParseError,
                     ShapeError,
                     VerifyError,
)
from .evaluate import evaluate
from .graph import Graph, Node, Value, make_input, subgraphs
from .opdef import OPDEFS, AttrSpec, OpDef, opdef
from .ops import Kind, Op
from .text import format_attr, parse, print_graph
from .types import DType, Loc, TensorType, promote
from .verify import verify

__all__ = [
    "ArgumentError", "AttrSpec", "Builder", "CompileError", "DType", "Graph", "IndexOutOfRange",
    "Kind", "Loc",
    "NnjitError", "Node", "OPDEFS", "Op", "OpDef", "ParseError", "ShapeError", "Sym",
    "TensorType", "Value", "VerifyError", "evaluate", "format_attr", "make_input", "opdef",
    "parse", "print_graph", "promote", "register_exclusion", "subgraphs", "user_loc", "verify",
]
