"""Reading an ONNX model without trusting it: the file size is bounded, the protobuf parse is
guarded, and the graph is validated here (names defined before use, no cycles, known element
types, sane dims) before any converter sees it. External data is read by `tensors.py`, confined
to the model's folder. Nothing is unpickled or evaluated.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .tensors import OnnxError, checked_dims, elem_type_name, numpy_dtype, to_numpy

MAX_MODEL_BYTES = 2 << 30       # protobuf's own limit for one message
MIN_OPSET, MAX_IR_VERSION = 7, 64


def _onnx():
    try:
        import onnx
    except ImportError:
        raise OnnxError("ONNX support needs the onnx package: pip install 'nnjit[onnx]'") from None
    return onnx


@dataclass(frozen=True)
class ValueSpec:
    """A graph input or output: its name, ONNX element type and shape (None for a dim the
    model leaves symbolic)."""

    name: str
    elem_type: int
    shape: tuple[int | None, ...]

    @property
    def dtype(self) -> np.dtype:
        return numpy_dtype(self.elem_type, f"value {self.name!r}")


@dataclass
class LoadedModel:
    """A validated model: the proto, its folder (for external data), the default-domain
    opset, and the graph's nodes in a topological order."""

    proto: object
    base_dir: str | None
    opset: int
    nodes: list
    inputs: list[ValueSpec]
    outputs: list[ValueSpec]
    initializers: dict[str, np.ndarray]
    path: str


def read_model(model) -> LoadedModel:
    """`model` (a path, bytes or an onnx.ModelProto) parsed and validated."""
    onnx = _onnx()
    base_dir, path = None, "<model>"
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        proto = _parse(onnx, _read_file(path), path)
        base_dir = os.path.dirname(os.path.abspath(path))
    elif isinstance(model, (bytes, bytearray)):
        proto = _parse(onnx, bytes(model), path)
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        raise OnnxError(f"expected a path, bytes or an onnx.ModelProto, got "
                        f"{type(model).__name__}")
    return validate(proto, base_dir, path)


def _read_file(path: str) -> bytes:
    if not os.path.isfile(path):
        raise OnnxError(f"no such file: {path}")
    size = os.path.getsize(path)
    if size > MAX_MODEL_BYTES:
        raise OnnxError(f"{path}: {size} bytes is more than an ONNX file can hold "
                        f"({MAX_MODEL_BYTES}); large weights belong in external data")
    with open(path, "rb") as f:
        return f.read()


def _parse(onnx, data: bytes, path: str):
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:   # google.protobuf.message.DecodeError and friends
        raise OnnxError(f"{path}: not a valid ONNX model (truncated or corrupt protobuf: "
                        f"{e})") from None
    return proto


def validate(proto, base_dir: str | None, path: str) -> LoadedModel:
    if not proto.HasField("graph") or not proto.ir_version:
        raise OnnxError(f"{path}: not an ONNX model (no graph or no ir_version; truncated or "
                        "another kind of file?)")
    if proto.ir_version > MAX_IR_VERSION:
        raise OnnxError(f"{path}: ir_version {proto.ir_version} is not a known ONNX version")
    opset = _default_opset(proto, path)
    g = proto.graph
    inits = {}
    for t in g.initializer:
        if not t.name:
            raise OnnxError(f"{path}: an initializer has no name")
        inits[t.name] = to_numpy(t, base_dir)
    for t in g.sparse_initializer:
        raise OnnxError(f"{path}: sparse initializer {t.values.name!r} is not supported")
    inputs = [_spec(v, path) for v in g.input if v.name not in inits]
    outputs = [_spec(v, path, need_shape=False) for v in g.output]
    nodes = _topological(g, set(inits) | {v.name for v in inputs}, path)
    defined = set(inits) | {v.name for v in inputs} | {o for n in nodes for o in n.output}
    for v in outputs:
        if v.name not in defined:
            raise OnnxError(f"{path}: graph output {v.name!r} is computed by no node")
    _check(proto if base_dir is None else path, path)
    return LoadedModel(proto, base_dir, opset, nodes, inputs, outputs, inits, path)


def _check(proto, path: str) -> None:
    """onnx.checker's own rules (attribute types, opset schemas), after ours: ours name the
    node for the structural faults first. A model read from a file is checked by path, so
    its external data resolves against the model's folder."""
    onnx = _onnx()
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid model"
        raise OnnxError(f"{path}: onnx.checker rejects the model: {first}") from None


def _default_opset(proto, path: str) -> int:
    versions = {o.domain: o.version for o in proto.opset_import}
    opset = versions.get("", versions.get("ai.onnx"))
    if opset is None:
        raise OnnxError(f"{path}: the model imports no version of the default ONNX opset")
    newest = _onnx().defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise OnnxError(f"{path}: opset {opset} is outside the supported {MIN_OPSET}..{newest}")
    return int(opset)


def _spec(v, path: str, need_shape: bool = True) -> ValueSpec:
    what = f"{path}: value {v.name!r}"
    if not v.name:
        raise OnnxError(f"{path}: a graph input or output has no name")
    if not v.type.HasField("tensor_type"):
        raise OnnxError(f"{what} is not a tensor (sequences, maps and optionals are not "
                        "supported)")
    tt = v.type.tensor_type
    numpy_dtype(tt.elem_type, what)
    if not tt.HasField("shape"):
        if need_shape:
            raise OnnxError(f"{what} has no shape; pass shapes={{{v.name!r}: (...)}}")
        return ValueSpec(v.name, tt.elem_type, ())
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        else:
            dims.append(None)
    known = [d for d in dims if d is not None]
    checked_dims(known, what, numpy_dtype(tt.elem_type, what).itemsize)
    return ValueSpec(v.name, tt.elem_type, tuple(dims))


def _topological(g, available: set[str], path: str) -> list:
    """The nodes, checked to come after the producers of their inputs (as ONNX requires): a
    cycle is an error naming its nodes, and so is a node before its inputs' producer."""
    producer = {}
    for n in g.node:
        for o in n.output:
            if not o:
                continue
            if o in producer or o in available:
                raise OnnxError(f"{path}: value {o!r} is defined twice (node "
                                f"{_label(n)}); ONNX graphs are SSA")
            producer[o] = n
    for n in g.node:
        for i in n.input:
            if i and i not in producer and i not in available:
                raise OnnxError(f"{path}: node {_label(n)} reads {i!r}, which no input, "
                                "initializer or node defines")
    order, state = [], {}       # state: 1 visiting, 2 done (iterative DFS: no recursion limit)
    for root in g.node:
        if state.get(id(root)) == 2:
            continue
        stack = [(root, iter([i for i in root.input if i in producer]))]
        state[id(root)] = 1
        while stack:
            node, deps = stack[-1]
            nxt = next(deps, None)
            if nxt is None:
                stack.pop()
                state[id(node)] = 2
                order.append(node)
                continue
            dep = producer[nxt]
            if state.get(id(dep)) == 1:
                cycle = [_label(s[0]) for s in stack]
                raise OnnxError(f"{path}: the graph has a cycle through nodes "
                                f"{', '.join(cycle)}")
            if state.get(id(dep)) != 2:
                state[id(dep)] = 1
                stack.append((dep, iter([i for i in dep.input if i in producer])))
    position = {id(n): k for k, n in enumerate(g.node)}
    for n in g.node:
        for i in n.input:
            if i in producer and position[id(producer[i])] > position[id(n)]:
                raise OnnxError(f"{path}: node {_label(n)} reads {i!r} before node "
                                f"{_label(producer[i])} computes it (ONNX graphs must be in "
                                "topological order)")
    return order


def _label(n) -> str:
    return f"{n.name!r} ({n.op_type})" if n.name else f"<unnamed> ({n.op_type})"


__all__ = ["LoadedModel", "OnnxError", "ValueSpec", "elem_type_name", "read_model", "validate"]
