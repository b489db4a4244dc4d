"""nnjit: a deep-learning compiler. Trace a Python function into a typed graph IR, optimize it
(autodiff, fusion, memory planning) and run it with native code.

    >>> import nnjit, numpy as np
    >>> f = nnjit.jit(lambda x: nnjit.relu(x) * 2.0)
    >>> f(np.array([-1.0, 2.0], np.float32))
    array([0., 4.], dtype=float32)
"""
from .api import (CompiledFunction, JitFunction, checkpoint, compile, grad, jit, value_and_grad,
                  vmap)
from .frontend import nn, optim  # noqa: F401  (the layer library and the optimizers)
from .frontend import random  # noqa: F401  (nnjit.random.normal, nnjit.random.uniform)
from .frontend.dsl import *  # noqa: F401,F403  (the op functions: nnjit.exp, nnjit.conv2d, ...)
from .frontend.dsl import __all__ as _dsl_all
from .frontend.pytree import tree_leaves, tree_map
from .frontend.tracing import trace
from .ir import (
                 ArgumentError,
                 CompileError,
                 DType,
                 Graph,
                 IndexOutOfRange,
                 NnjitError,
                 ParseError,
                 ShapeError,
                 TensorType,
                 VerifyError,
                 parse,
                 verify,
)
from .ir import Sym as Tensor

__version__ = "0.1.0"

float32, float64, int32, int64 = DType.F32, DType.F64, DType.I32, DType.I64
bool_ = DType.BOOL
from . import debug  # noqa: E402,F401  (nnjit.debug.bisect)

__all__ = [  # the op functions of frontend.dsl are exported too (see its __all__)
    "ArgumentError", "checkpoint", "CompiledFunction", "CompileError", "DType", "Graph", "IndexOutOfRange",
    "JitFunction",
    "NnjitError", "ParseError", "ShapeError", "Tensor", "TensorType", "VerifyError", "compile",
    "debug", "grad", "jit", "nn", "optim", "parse", "random", "trace", "tree_leaves", "tree_map",
    "value_and_grad", "verify", "vmap", "float32", "float64", "int32", "int64", "bool_",
] + list(_dsl_all)
