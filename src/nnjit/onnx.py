"""ONNX in and out: `load` compiles an ONNX model to native code, `export` writes an nnjit
function as an ONNX model.

    >>> fn = nnjit.onnx.load("lenet.onnx", backend="llvm")
    >>> (logits,) = fn(images)           # numpy in, a tuple of numpy arrays out
    >>> print(fn.graph)                  # the nnjit IR, as for any jit function
    >>> nnjit.onnx.export(step, x, w, path="step.onnx")

Needs the optional `onnx` package (`pip install 'nnjit[onnx]'`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .api import JitFunction
from .frontend.onnx import ConstantRequired, OnnxError, OnnxModel, import_model
from .frontend.onnx.convert import compute_dtype
from .frontend.onnx.tensors import STORAGE_TYPES
from .frontend.tracing import trace_flat
from .runtime.compiled import CompiledFunction


class OnnxFunction:
    """An ONNX model compiled for its input shapes. Calling it takes numpy arrays in the
    graph's input order (after `params`, with params_as_inputs=True) and returns a tuple of
    arrays in its output order, in the dtypes the model declares. Everything else (`graph`,
    `ir()`, `explain_fusion()`, `memory_plan()`, `llvm_ir()`, `export()`...) is the
    CompiledFunction's: `lower()` returns it."""

    def __init__(self, model: OnnxModel, compiled: CompiledFunction, params_as_inputs: bool):
        self.model, self.compiled, self.params_as_inputs = model, compiled, params_as_inputs
        self.params = model.params

    @property
    def graph(self):
        return self.compiled.graph

    def lower(self) -> CompiledFunction:
        return self.compiled

    def __call__(self, *args) -> tuple[np.ndarray, ...]:
        if self.params_as_inputs:
            if not args:
                raise OnnxError("params_as_inputs=True: call as fn(params, *inputs)")
            params, args = args[0], args[1:]
        specs = self.model.inputs
        if len(args) != len(specs):
            raise OnnxError(f"the model takes {len(specs)} inputs "
                            f"({', '.join(v.name for v in specs)}), got {len(args)}")
        xs = [_as_input(x, v) for x, v in zip(args, specs)]
        outs = self.compiled(params, *xs) if self.params_as_inputs else self.compiled(*xs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return tuple(_as_output(o, v) for o, v in zip(outs, self.model.outputs))

    def __getattr__(self, name: str) -> Any:
        if name in ("compiled", "model"):
            raise AttributeError(name)
        return getattr(self.compiled, name)


def _as_input(x, spec) -> np.ndarray:
    a = np.asarray(x)
    if a.shape != tuple(spec.shape):
        raise OnnxError(f"input {spec.name!r} must have shape {list(spec.shape)}, got "
                        f"{list(a.shape)}")
    if spec.elem_type == 16 and a.dtype.name == "bfloat16":
        return a.astype(np.float32)
    if a.dtype == spec.dtype and spec.elem_type in STORAGE_TYPES:   # float8, int4: exact
        return a.astype(compute_dtype(spec.dtype))
    if a.dtype != spec.dtype and not (a.dtype.kind == spec.dtype.kind == "f"):
        raise OnnxError(f"input {spec.name!r} must be {spec.dtype}, got {a.dtype}")
    return a.astype(compute_dtype(spec.dtype), copy=False)


def _as_output(o: np.ndarray, spec) -> np.ndarray:
    if spec.elem_type == 16:      # bfloat16: ml_dtypes' type (onnx depends on it), rounded
        try:
            import ml_dtypes
        except ImportError:
            return o
        return o.astype(ml_dtypes.bfloat16)
    return o if o.dtype == spec.dtype else o.astype(spec.dtype)


def load(model, backend: str = "llvm", params_as_inputs: bool = False,
         shapes: Mapping[str, Sequence[int]] | None = None, fuse: bool = True,
         constants: Mapping[str, Any] | None = None) -> OnnxFunction:
    """Compile the ONNX `model` (a path, bytes or onnx.ModelProto) with `backend`.

    Initializers become constants, or, with `params_as_inputs=True`, the `params` dict the
    function takes first (`fn.params` holds their values), so the model can be fine-tuned
    with `nnjit.grad(lambda p, x: loss(fn.model.apply(p, x)))`. `shapes` fixes symbolic
    input dims; `constants` fixes graph inputs to values (specializing the model on them)."""
    m = import_model(model, params_as_inputs, shapes, constants)
    if params_as_inputs:
        fn, args = m.function_with_params(), (m.params, *m.example_inputs())
    else:
        fn, args = m.function(), tuple(m.example_inputs())
    cf = JitFunction(fn, backend=backend, fuse=fuse).lower(*args)
    return OnnxFunction(m, cf, params_as_inputs)


def trace(model, params_as_inputs: bool = False, shapes=None):
    """The nnjit Graph of `model`, before any pass (what `nnjit import` prints)."""
    m = import_model(model, params_as_inputs, shapes)
    if params_as_inputs:
        return trace_flat(m.function_with_params(), (m.params, *m.example_inputs())).graph
    return trace_flat(m.function(), tuple(m.example_inputs())).graph


def export(fn: Callable, *example_args, path: str | None = None, opset: int | None = None):
    """Trace `fn` on `example_args` and write it as an ONNX model at `path` (also returned as
    an onnx.ModelProto). An op ONNX cannot express is an error naming it."""
    from .frontend.onnx.export import graph_to_onnx

    graph = trace_flat(fn, example_args).graph
    proto = graph_to_onnx(graph, opset)
    if path is not None:
        with open(path, "wb") as f:
            f.write(proto.SerializeToString())
    return proto


__all__ = ["ConstantRequired", "OnnxError", "OnnxFunction", "export", "load", "trace"]
