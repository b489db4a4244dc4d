"""nnjit Graph -> ONNX ModelProto, one table entry per op (`EXPORTERS`), checked with
onnx.checker. Graphs are exported as traced (before fusion), so every node is a primitive.

    >>> proto = graph_to_onnx(nnjit.trace(lambda x, w: nnjit.relu(x @ w), x, w))
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ...ir import DType, Graph, Node, Op
from .tensors import OnnxError

DEFAULT_OPSET = 18
_ELEM = {DType.F32: 1, DType.F64: 11, DType.I32: 6, DType.I64: 7, DType.BOOL: 9}
_ELEM_OF = {d.np: t for d, t in _ELEM.items()}
_INT64_MIN = -(1 << 63)


class Emitter:
    """Collects ONNX nodes and initializers, naming values v0, v1, ..."""

    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0
        self.dtypes: dict[str, np.dtype] = {}     # numpy dtype of each named value

    def fresh(self, hint: str = "v") -> str:
        self.count += 1
        return f"{hint}{self.count}"

    def node(self, op_type: str, inputs, outputs=None, **attrs) -> list[str]:
        from onnx import helper

        outputs = outputs or [self.fresh()]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), **attrs))
        return outputs

    def one(self, op_type: str, inputs, **attrs) -> str:
        return self.node(op_type, inputs, **attrs)[0]

    def const(self, value, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(list(values), np.int64), "i")


# One entry per op: (emitter, node, input names) -> output name(s).
Exporter = Callable[[Emitter, Node, list], object]


def _simple(op_type: str) -> Exporter:
    return lambda e, n, xs: e.one(op_type, xs)


def _reduce(op_type: str) -> Exporter:
    return lambda e, n, xs: e.one(op_type, [xs[0], e.ints(n.attrs["axes"])],
                                  keepdims=int(n.attrs["keepdims"]))


def _remainder(e: Emitter, n: Node, xs):
    if not n.out.type.dtype.is_float:
        return e.one("Mod", xs, fmod=0)
    # numpy's remainder takes the divisor's sign: x - floor(x / y) * y
    q = e.one("Floor", [e.one("Div", xs)])
    return e.one("Sub", [xs[0], e.one("Mul", [q, xs[1]])])


def _pads(padding) -> list[int]:
    (t, b), (l, r) = padding
    return [t, l, b, r]


def _conv(e: Emitter, n: Node, xs):
    a = n.attrs
    return e.one("Conv", xs, strides=list(a["stride"]), pads=_pads(a["padding"]),
                 dilations=list(a["dilation"]))


def _conv_grad_input(e: Emitter, n: Node, xs):
    a = n.attrs
    return e.one("ConvTranspose", xs, strides=list(a["stride"]), pads=_pads(a["padding"]),
                 dilations=list(a["dilation"]), output_shape=list(a["input_shape"][2:]))


def _pool(op_type: str) -> Exporter:
    def f(e: Emitter, n: Node, xs):
        a = n.attrs
        extra = {"count_include_pad": int(a["count_include_pad"])} if "count_include_pad" in a \
            else {}
        return e.one(op_type, xs, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                     pads=_pads(a["padding"]), **extra)
    return f


def _slice(e: Emitter, n: Node, xs):
    a = n.attrs
    # A normalized stop of -1 with a negative step means "through index 0", which ONNX
    # writes as a stop below any index.
    stops = [_INT64_MIN if s < 0 and b == -1 else b for b, s in zip(a["stops"], a["steps"])]
    axes = list(range(len(a["starts"])))
    return e.one("Slice", [xs[0], e.ints(a["starts"]), e.ints(stops), e.ints(axes),
                           e.ints(a["steps"])])


def _pad(e: Emitter, n: Node, xs):
    pads = [p[0] for p in n.attrs["pads"]] + [p[1] for p in n.attrs["pads"]]
    value = e.const(np.asarray(n.attrs["value"], n.out.type.dtype.np))
    return e.one("Pad", [xs[0], e.ints(pads), value], mode="constant")


EXPORTERS: dict[Op, Exporter] = {
    Op.NEG: _simple("Neg"), Op.EXP: _simple("Exp"), Op.LOG: _simple("Log"),
    Op.SQRT: _simple("Sqrt"), Op.ABS: _simple("Abs"), Op.TANH: _simple("Tanh"),
    Op.SIGMOID: _simple("Sigmoid"), Op.RELU: _simple("Relu"), Op.SOFTPLUS: _simple("Softplus"),
    Op.NOT: _simple("Not"), Op.STOP_GRADIENT: _simple("Identity"),
    Op.CAST: lambda e, n, xs: e.one("Cast", xs, to=_ELEM[n.attrs["dtype"]]),
    Op.ADD: _simple("Add"), Op.SUB: _simple("Sub"), Op.MUL: _simple("Mul"),
    Op.DIV: _simple("Div"), Op.POW: _simple("Pow"), Op.REMAINDER: _remainder,
    Op.MAXIMUM: _simple("Max"), Op.MINIMUM: _simple("Min"), Op.AND: _simple("And"),
    Op.OR: _simple("Or"), Op.EQ: _simple("Equal"), Op.LT: _simple("Less"),
    Op.NE: lambda e, n, xs: e.one("Not", [e.one("Equal", xs)]),
    Op.LE: _simple("LessOrEqual"), Op.GT: _simple("Greater"), Op.GE: _simple("GreaterOrEqual"),
    Op.WHERE: _simple("Where"),
    Op.SUM: _reduce("ReduceSum"), Op.MAX: _reduce("ReduceMax"),
    Op.ARGMAX: lambda e, n, xs: e.one("ArgMax", xs, axis=n.attrs["axis"],
                                      keepdims=int(n.attrs["keepdims"])),
    Op.MATMUL: _simple("MatMul"), Op.CONV2D: _conv, Op.CONV2D_GRAD_INPUT: _conv_grad_input,
    Op.MAX_POOL2D: _pool("MaxPool"), Op.AVG_POOL2D: _pool("AveragePool"),
    Op.RESHAPE: lambda e, n, xs: e.one("Reshape", [xs[0], e.ints(n.attrs["shape"])]),
    Op.TRANSPOSE: lambda e, n, xs: e.one("Transpose", xs, perm=list(n.attrs["perm"])),
    Op.BROADCAST_TO: lambda e, n, xs: e.one("Expand", [xs[0], e.ints(n.attrs["shape"])]),
    Op.CONCAT: lambda e, n, xs: e.one("Concat", xs, axis=n.attrs["axis"]),
    Op.SLICE: _slice, Op.PAD: _pad,
    Op.TAKE: lambda e, n, xs: e.one("Gather", xs, axis=n.attrs["axis"]),
    # NOTE: ONNX has no checked index; Gather itself rejects an out-of-range index in ORT.
    Op.CHECK_INDEX: _simple("Identity"),
}


def _floor_divide(e: Emitter, n: Node, xs):
    if not n.out.type.dtype.is_float:
        return _int_floor_div(e, xs, e.one("Div", xs))
    # numpy's float floor_divide: (x - fmod(x, y)) / y, one less where fmod's sign differs
    # from y's, then floored with a round-to-nearest fix (floor(x / y) alone is off by one
    # where x / y rounds up to an integer).
    dt = n.out.type.dtype.np
    zero, one, half = (e.const(np.asarray(v, dt)) for v in (0, 1, 0.5))
    mod = e.one("Mod", xs, fmod=1)
    div = e.one("Div", [e.one("Sub", [xs[0], mod]), xs[1]])
    differ = e.one("Xor", [e.one("Less", [xs[1], zero]), e.one("Less", [mod, zero])])
    fix = e.one("And", [e.one("Not", [e.one("Equal", [mod, zero])]), differ])
    div = e.one("Sub", [div, e.one("Where", [fix, one, zero])])
    fl = e.one("Floor", [div])
    up = e.one("Greater", [e.one("Sub", [div, fl]), half])
    return e.one("Add", [fl, e.one("Where", [up, one, zero])])


def _int_floor_div(e: Emitter, xs, q):
    # ONNX integer Div truncates; numpy's floor_divide rounds down: one less where the
    # remainder is nonzero and the signs differ.
    zero = e.const(np.zeros((), _dtype_of_np(e, xs)))
    rem = e.one("Mod", xs, fmod=1)
    neg = e.one("Xor", [e.one("Less", [xs[0], zero]), e.one("Less", [xs[1], zero])])
    fix = e.one("And", [neg, e.one("Not", [e.one("Equal", [rem, zero])])])
    return e.one("Sub", [q, e.one("Cast", [fix], to=_ELEM_OF[_dtype_of_np(e, xs)])])


def _dtype_of_np(e: Emitter, xs):
    return e.dtypes[xs[0]]


# Ops added by later issues, exported where this nnjit has them (one line each).
for _name, _fn in (("SIN", _simple("Sin")), ("COS", _simple("Cos")), ("ERF", _simple("Erf")),
                   ("FLOOR", _simple("Floor")), ("CEIL", _simple("Ceil")),
                   # ONNX Round, like numpy's, rounds half to even
                   ("ROUND", _simple("Round")), ("FLOOR_DIVIDE", _floor_divide),
                   ("EXPM1", lambda e, n, xs: e.one("Sub", [e.one("Exp", xs), e.const(
                       np.ones((), n.out.type.dtype.np))])),
                   ("LOG1P", lambda e, n, xs: e.one("Log", [e.one("Add", [xs[0], e.const(
                       np.ones((), n.out.type.dtype.np))])])),
                   ("PROD", _reduce("ReduceProd")),
                   ("OPTIMIZATION_BARRIER", _simple("Identity"))):
    if hasattr(Op, _name):
        EXPORTERS[getattr(Op, _name)] = _fn


def graph_to_onnx(graph: Graph, opset: int | None = None):
    """`graph` as a checked onnx.ModelProto; an op without an ONNX form is an OnnxError naming
    the first such node and its source line."""
    import onnx
    from onnx import helper

    e = Emitter()
    names: dict = {}
    for v in graph.inputs:
        names[v] = v.node.attrs["name"]
        e.dtypes[names[v]] = v.type.dtype.np
    for n in graph.nodes:
        if n.op == Op.CONST:
            names[n.out] = e.const(n.attrs["value"])
            e.dtypes[names[n.out]] = n.out.type.dtype.np
            continue
        if n.op == Op.IOTA:      # static: its values are known now
            shape, axis = n.attrs["shape"], n.attrs["axis"]
            idx = np.arange(shape[axis], dtype=n.attrs["dtype"].np).reshape(
                (-1,) + (1,) * (len(shape) - axis - 1))
            names[n.out] = e.const(np.broadcast_to(idx, shape))
            e.dtypes[names[n.out]] = n.out.type.dtype.np
            continue
        fn = EXPORTERS.get(n.op)
        if fn is None:
            at = f" at {n.loc}" if n.loc else ""
            raise OnnxError(f"export: op {n.op.value}{at} has no ONNX form (exportable ops: "
                            f"{', '.join(sorted(o.value for o in EXPORTERS))})")
        out = fn(e, n, [names[s] for s in n.srcs])
        names[n.out] = out if isinstance(out, str) else out[0]
        e.dtypes[names[n.out]] = n.out.type.dtype.np
    outputs, out_names = [], []
    for k, v in enumerate(graph.outputs):
        name = f"output{k}"
        e.node("Identity", [names[v]], [name])
        outputs.append(_value_info(name, v.type))
    inputs = [_value_info(names[v], v.type) for v in graph.inputs]
    g = helper.make_graph(e.nodes, graph.name, inputs, outputs, initializer=e.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset or DEFAULT_OPSET)],
                              producer_name="nnjit")
    model.ir_version = min(model.ir_version, 10)   # what current runtimes read
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:
        raise OnnxError(f"export: the model fails onnx.checker: {err}") from None
    return model


def _value_info(name: str, t):
    from onnx import helper

    return helper.make_tensor_value_info(name, _ELEM[t.dtype], list(t.shape))
