"""ONNX import: a model becomes a traceable function over nnjit's DSL (see `import_model`),
which `nnjit.onnx.load` compiles. Export (nnjit Graph -> ONNX) is in `export.py`.

    >>> m = import_model("mlp.onnx")
    >>> m.inputs                      # [ValueSpec(name='x', elem_type=1, shape=(8, 784))]
    >>> g = nnjit.trace(m.function(), *m.example_inputs())
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ...ir import Sym
from ...ir.prims import builder_of
from .convert import CONVERTERS, check_supported, compute_dtype, convert_nodes
from .load import LoadedModel, ValueSpec, read_model
from .tensors import ConstantRequired, OnnxError


@dataclass
class OnnxModel:
    """An imported model: its inputs/outputs (shapes resolved), and its float initializers as
    `params` when imported with `params_as_inputs=True` (the rest are constants)."""

    loaded: LoadedModel
    inputs: list[ValueSpec]
    outputs: list[ValueSpec]
    params: dict[str, np.ndarray] = field(default_factory=dict)

    def apply(self, params: Mapping[str, object], *inputs) -> tuple:
        """The model's outputs for `inputs` (traced tensors), with initializers from `params`
        where given. Traceable: call it inside jit/grad/trace."""
        m = self.loaded
        if len(inputs) != len(self.inputs):
            raise OnnxError(f"{m.path}: the model takes {len(self.inputs)} inputs "
                            f"({', '.join(v.name for v in self.inputs)}), got {len(inputs)}")
        env: dict[str, object] = dict(m.initializers)
        env.update({k: v for k, v in params.items() if k in env})
        env.update({spec.name: x for spec, x in zip(self.inputs, inputs)})
        syms = [v for v in env.values() if isinstance(v, Sym)]
        outs = convert_nodes(m, env, builder_of(*syms) if syms else None)
        return tuple(outs)

    def function(self) -> Callable:
        """`apply` as a function of the inputs alone (params fixed to constants), its
        parameters named after the graph inputs so traced inputs carry the ONNX names."""
        def run(*xs):
            return self.apply({}, *xs)
        run.__signature__ = _signature([v.name for v in self.inputs])
        run.__name__ = self.loaded.proto.graph.name or "onnx_model"
        return run

    def function_with_params(self) -> Callable:
        def run(params, *xs):
            return self.apply(params, *xs)
        run.__signature__ = _signature(["params"] + [v.name for v in self.inputs])
        run.__name__ = self.loaded.proto.graph.name or "onnx_model"
        return run

    def example_inputs(self) -> list[np.ndarray]:
        """Uninitialized arrays of each input's shape and compute dtype (for tracing)."""
        return [np.empty(v.shape, compute_dtype(v.dtype)) for v in self.inputs]


def _signature(names: Sequence[str]) -> inspect.Signature:
    seen, params = set(), []
    for k, n in enumerate(names):
        ident = "".join(c if c.isalnum() or c == "_" else "_" for c in n) or f"arg{k}"
        if ident[0].isdigit() or ident in seen or not ident.isidentifier():
            ident = f"arg{k}_{ident}" if ident.isidentifier() or ident[0].isdigit() else f"arg{k}"
        seen.add(ident)
        params.append(inspect.Parameter(ident, inspect.Parameter.POSITIONAL_OR_KEYWORD))
    return inspect.Signature(params)


def import_model(model, params_as_inputs: bool = False,
                 shapes: Mapping[str, Sequence[int]] | None = None,
                 constants: Mapping[str, np.ndarray] | None = None) -> OnnxModel:
    """Read, validate and check `model` (a path, bytes or onnx.ModelProto). Every unsupported
    node is reported in one OnnxError before anything is converted. `shapes` fixes the dims an
    input leaves symbolic; `params_as_inputs` makes float initializers a params dict;
    `constants` fixes graph inputs to values (they become initializers: a model whose
    Reshape shape is an input compiles once that input is given)."""
    m = read_model(model)
    for name, value in (constants or {}).items():
        m = _bind(m, name, value)
    check_supported(m)
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - {v.name for v in m.inputs})
    if unknown:
        raise OnnxError(f"{m.path}: shapes names {unknown}, which are not graph inputs "
                        f"({', '.join(v.name for v in m.inputs)})")
    inputs = [_resolve(v, shapes.get(v.name), m.path) for v in m.inputs]
    params = {}
    if params_as_inputs:
        params = {k: v.astype(compute_dtype(v.dtype)) for k, v in m.initializers.items()
                  if v.dtype.kind == "f"}
    return OnnxModel(m, inputs, m.outputs, params)


def _bind(m: LoadedModel, name: str, value) -> LoadedModel:
    spec = next((v for v in m.inputs if v.name == name), None)
    if spec is None:
        raise OnnxError(f"{m.path}: constants names {name!r}, which is not a graph input "
                        f"({', '.join(v.name for v in m.inputs)})")
    arr = np.array(value, dtype=spec.dtype)
    if len(arr.shape) != len(spec.shape) or any(
            d is not None and d != a for d, a in zip(spec.shape, arr.shape)):
        raise OnnxError(f"{m.path}: constant for input {name!r} has shape {list(arr.shape)}, "
                        f"the input is {_show(spec.shape)}")
    return dataclasses.replace(m, inputs=[v for v in m.inputs if v.name != name],
                               initializers={**m.initializers, name: arr})


def _resolve(v: ValueSpec, given, path: str) -> ValueSpec:
    if given is not None:
        given = tuple(int(d) for d in given)
        if len(given) != len(v.shape) or any(
                d is not None and d != g for d, g in zip(v.shape, given)):
            raise OnnxError(f"{path}: input {v.name!r} has shape {_show(v.shape)}, "
                            f"shapes gives {list(given)}")
        if min(given, default=0) < 0:
            raise OnnxError(f"{path}: input {v.name!r}: negative dim in {list(given)}")
        return ValueSpec(v.name, v.elem_type, given)
    if None in v.shape:
        raise OnnxError(f"{path}: input {v.name!r} has symbolic dims {_show(v.shape)}; pass "
                        f"shapes={{{v.name!r}: (...)}} to fix them")
    return v


def _show(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


__all__ = ["CONVERTERS", "ConstantRequired", "OnnxError", "OnnxModel", "import_model"]
