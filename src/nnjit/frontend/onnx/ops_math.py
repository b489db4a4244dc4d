"""Converters for elementwise math, activations, comparisons, casts, contractions (MatMul,
Gemm, Einsum) and reductions. Each is written with the DSL functions users call."""
from __future__ import annotations

import math

import numpy as np

from .. import dsl
from ...ir import DType, Sym
from ...ir import prims as P
from .context import NodeContext, compute_dtype, converter
from .tensors import elem_type_name, numpy_dtype, storage_dtype

# -- elementwise, one line per op ---------------------------------------------------------------

UNARY = {
    "Relu": dsl.relu, "Sigmoid": dsl.sigmoid, "Tanh": dsl.tanh, "Exp": dsl.exp,
    "Log": dsl.log, "Sqrt": dsl.sqrt, "Neg": dsl.neg, "Abs": dsl.abs, "Softplus": dsl.softplus,
    "Not": dsl.logical_not, "Reciprocal": lambda x: 1.0 / x,
}
# Optional DSL functions (added by other issues): an op is importable once its function exists.
for _op, _name in (("Erf", "erf"), ("Sin", "sin"), ("Cos", "cos"), ("Floor", "floor"),
                   ("Ceil", "ceil")):
    if hasattr(dsl, _name):
        UNARY[_op] = getattr(dsl, _name)

BINARY = {
    "Add": dsl.add, "Sub": dsl.sub, "Mul": dsl.mul, "Equal": dsl.equal,
    "Greater": dsl.greater, "Less": dsl.less, "GreaterOrEqual": dsl.greater_equal,
    "LessOrEqual": dsl.less_equal, "And": dsl.logical_and, "Or": dsl.logical_or,
    "Xor": dsl.not_equal,
}


def _unary(ctx: NodeContext):
    return UNARY[ctx.node.op_type](ctx.tensor(0))


def _binary(ctx: NodeContext):
    return BINARY[ctx.node.op_type](ctx.tensor(0), ctx.tensor(1))


converter(*UNARY)(_unary)
converter(*BINARY)(_binary)


@converter("Div")
def _div(ctx: NodeContext):
    x, y = ctx.tensor(0), ctx.tensor(1)
    if x.dtype.is_float:
        return x / y
    # ONNX integer division truncates toward zero (C semantics); f64 holds every i32 exactly.
    q = dsl.cast(x, DType.F64) / dsl.cast(y, DType.F64)
    return dsl.cast(q, x.dtype)


@converter("Pow")
def _pow(ctx: NodeContext):
    x, y = ctx.tensor(0), ctx.tensor(1)
    if x.dtype.is_float:
        return x ** dsl.cast(y, x.dtype)
    # The result has the base's type; integer powers are exact in f64 up to 2**53.
    return dsl.cast(dsl.cast(x, DType.F64) ** dsl.cast(y, DType.F64), x.dtype)


@converter("Identity")
def _identity(ctx: NodeContext):
    return ctx.input(0)


@converter("LeakyRelu")
def _leaky_relu(ctx: NodeContext):
    x, alpha = ctx.tensor(0), ctx.float("alpha", 0.01)
    return dsl.where(x >= 0, x, x * alpha)


@converter("Elu")
def _elu(ctx: NodeContext):
    x, alpha = ctx.tensor(0), ctx.float("alpha", 1.0)
    return dsl.where(x >= 0, x, (dsl.exp(x) - 1.0) * alpha)


@converter("Selu")
def _selu(ctx: NodeContext):
    x = ctx.tensor(0)
    alpha = ctx.float("alpha", 1.67326319217681884765625)
    gamma = ctx.float("gamma", 1.05070102214813232421875)
    return dsl.where(x > 0, x * gamma, (dsl.exp(x) * alpha - alpha) * gamma)


@converter("HardSigmoid")
def _hard_sigmoid(ctx: NodeContext):
    x = ctx.tensor(0)
    y = x * ctx.float("alpha", 0.2) + ctx.float("beta", 0.5)
    return dsl.maximum(dsl.minimum(y, 1.0), 0.0)


@converter("Gelu")
def _gelu(ctx: NodeContext):
    x, approx = ctx.tensor(0), ctx.str("approximate", "none")
    if approx == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
        return x * 0.5 * (dsl.tanh(inner) + 1.0)
    if approx != "none":
        raise ctx.error(f"approximate must be 'none' or 'tanh', got {approx!r}")
    if not hasattr(dsl, "erf"):
        raise ctx.error("Gelu with approximate='none' needs erf, which this nnjit lacks")
    return x * 0.5 * (dsl.erf(x * (1.0 / math.sqrt(2.0))) + 1.0)


@converter("Max", "Min", "Sum", "Mean")
def _variadic(ctx: NodeContext):
    op = ctx.node.op_type
    fn = {"Max": dsl.maximum, "Min": dsl.minimum, "Sum": dsl.add, "Mean": dsl.add}[op]
    xs = [ctx.tensor(i) for i in range(len(ctx.inputs)) if ctx.has(i)]
    if not xs:
        raise ctx.error("needs at least one input")
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    if len(xs) == 1:     # a lone input is still broadcast to nothing, just passed through
        return out
    return out / float(len(xs)) if op == "Mean" else out


@converter("Clip")
def _clip(ctx: NodeContext):
    x = ctx.tensor(0)
    if ctx.opset < 11:
        lo, hi = ctx.float("min"), ctx.float("max")
    else:
        lo = ctx.input(1) if ctx.has(1) else None
        hi = ctx.input(2) if ctx.has(2) else None
    if lo is not None:
        x = dsl.maximum(x, ctx.lift(lo) if not isinstance(lo, float) else lo)
    if hi is not None:
        x = dsl.minimum(x, ctx.lift(hi) if not isinstance(hi, float) else hi)
    return x


@converter("Where")
def _where(ctx: NodeContext):
    return dsl.where(ctx.tensor(0), ctx.tensor(1), ctx.tensor(2))


@converter("Cast")
def _cast(ctx: NodeContext):
    return cast_to(ctx, ctx.int("to"))


@converter("CastLike")
def _cast_like(ctx: NodeContext):
    t = ctx.elem_type(1)
    if t is not None:
        return cast_to(ctx, t)
    like = ctx.input(1)
    return dsl.cast(ctx.tensor(0), like.dtype.np if isinstance(like, Sym) else
                    compute_dtype(like.dtype))


def cast_to(ctx: NodeContext, elem_type: int | None):
    if elem_type is None:
        raise ctx.error("attribute 'to' is required")
    dt = numpy_dtype(elem_type, f"node {ctx.label}")
    x = dsl.cast(ctx.tensor(0), compute_dtype(dt))
    if storage_dtype(elem_type) is None:
        return x
    # NOTE: nnjit holds float8 / 4-bit / 2-bit values in f32 / i64 and rounds them to the narrow
    # type when they are returned; a cast whose result other nodes read would skip that
    # rounding, so it is refused rather than computed wrong.
    if not ctx.only_returned():
        raise ctx.error(f"Cast to {elem_type_name(elem_type)} is supported only where its result "
                        "is a graph output (nnjit computes it in a wider type)")
    import ml_dtypes

    if compute_dtype(dt) == np.float32:
        if ctx.int("saturate", 1):
            hi = float(ml_dtypes.finfo(dt).max)   # saturate: out of range (and inf) -> +-max
            x = dsl.where(x > hi, hi, dsl.where(x < -hi, -hi, x))
    elif ctx.tensor(0).dtype.is_float:
        # NOTE: ONNX leaves float -> int4/int2 out of range unspecified; its reference
        # (ml_dtypes) gives 0 there, and so does this.
        info = ml_dtypes.iinfo(dt)
        src = ctx.tensor(0)
        x = dsl.where((src > info.min - 1) & (src < info.max + 1), x, 0)
    return x


# -- contractions ---------------------------------------------------------------------------------

@converter("MatMul")
def _matmul(ctx: NodeContext):
    return dsl.matmul(ctx.tensor(0), ctx.tensor(1))


@converter("Gemm")
def _gemm(ctx: NodeContext):
    a, b = ctx.tensor(0), ctx.tensor(1)
    if ctx.int("transA", 0):
        a = dsl.transpose(a)
    if ctx.int("transB", 0):
        b = dsl.transpose(b)
    y = dsl.matmul(a, b)
    alpha, beta = ctx.float("alpha", 1.0), ctx.float("beta", 1.0)
    if alpha != 1.0:
        y = y * alpha
    if ctx.has(2) and beta != 0.0:
        c = ctx.tensor(2)
        y = y + (c * beta if beta != 1.0 else c)
    return y


@converter("Einsum")
def _einsum(ctx: NodeContext):
    eq = ctx.str("equation")
    if not eq:
        raise ctx.error("attribute 'equation' is required")
    return einsum(eq.replace(" ", ""), [ctx.tensor(i) for i in range(len(ctx.inputs))])


def einsum(eq: str, xs: list[Sym]) -> Sym:
    """numpy.einsum as a composite: diagonals by strided slices, then one broadcast product of
    all operands (laid out as output labels, then summed labels) and a sum."""
    # TODO(onnx): two-operand contractions as matmuls (batched), not a broadcast product.
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(xs):
        raise ValueError(f"equation {eq!r} has {len(terms)} operands, got {len(xs)} inputs")
    n_ell = 0
    for t, x in zip(terms, xs):
        if "..." in t:
            n_ell = max(n_ell, x.ndim - len(t.replace("...", "")))
    ell = [f"#{k}" for k in range(n_ell)]      # labels of the broadcast (ellipsis) dims
    labels_of = []
    for t, x in zip(terms, xs):
        head, dots, tail = t.partition("...")
        k = x.ndim - len(head) - len(tail) if dots else 0
        labs = list(head) + ell[n_ell - k:] + list(tail)
        if len(labs) != x.ndim:
            raise ValueError(f"term {t!r} does not match an operand of rank {x.ndim}")
        labels_of.append(labs)
    if arrow:
        head, dots, tail = rhs.partition("...")
        out = list(head) + (ell if dots else []) + list(tail)
    else:
        counts = {}
        for labs in labels_of:
            for lab in labs:
                counts[lab] = counts.get(lab, 0) + 1
        out = ell + sorted(lab for lab, c in counts.items() if c == 1 and not lab.startswith("#"))
    ops = [_diagonals(x, labs) for x, labs in zip(xs, labels_of)]
    everything = out + [lab for x, labs in ops for lab in labs if lab not in out]
    order = list(dict.fromkeys(everything))
    prod = None
    for x, labs in ops:
        # sum away labels no other operand and not the output uses
        others = {lab for y, ls in ops if ls is not labs for lab in ls} | set(out)
        lonely = [i for i, lab in enumerate(labs) if lab not in others]
        if lonely:
            x = dsl.sum(x, axis=tuple(lonely))
            labs = [lab for i, lab in enumerate(labs) if i not in lonely]
        present = [lab for lab in order if lab in labs]
        x = dsl.transpose(x, [labs.index(lab) for lab in present]) if present != labs else x
        sizes = dict(zip(present, x.shape))
        x = dsl.reshape(x, [sizes.get(lab, 1) for lab in order])
        prod = x if prod is None else prod * x
    summed = tuple(range(len(out), len(order)))
    res = dsl.sum(prod, axis=summed) if summed else prod
    return res


def _diagonals(x: Sym, labs: list[str]) -> tuple[Sym, list[str]]:
    """`x` with every repeated label reduced to its diagonal (x[..., i, i] -> x[..., i])."""
    labs = list(labs)
    while len(set(labs)) != len(labs):
        lab = next(lab for lab in labs if labs.count(lab) > 1)
        i = labs.index(lab)
        j = labs.index(lab, i + 1)
        n = x.shape[i]
        if x.shape[j] != n:
            raise ValueError(f"label {lab!r} has sizes {n} and {x.shape[j]}")
        rest = [k for k in range(x.ndim) if k not in (i, j)]
        x = dsl.transpose(x, rest + [i, j])
        x = dsl.reshape(x, x.shape[:-2] + (n * n,))
        x = x[..., ::n + 1] if n else dsl.reshape(x, x.shape[:-1] + (0,))
        labs = [labs[k] for k in rest] + [lab]
    return x, labs


# -- reductions -----------------------------------------------------------------------------------

REDUCE = {
    "ReduceSum": dsl.sum,
    "ReduceMean": dsl.mean,
    "ReduceMax": dsl.max,
    "ReduceMin": dsl.min,
    "ReduceL1": lambda x, axis, keepdims: dsl.sum(dsl.abs(x), axis, keepdims),
    "ReduceL2": lambda x, axis, keepdims: dsl.sqrt(dsl.sum(x * x, axis, keepdims)),
    "ReduceSumSquare": lambda x, axis, keepdims: dsl.sum(x * x, axis, keepdims),
    "ReduceLogSum": lambda x, axis, keepdims: dsl.log(dsl.sum(x, axis, keepdims)),
    "ReduceLogSumExp": lambda x, axis, keepdims: dsl.logsumexp(x, axis, keepdims),
}
# The opset from which each reduction takes its axes as an input instead of an attribute.
_AXES_AS_INPUT = {"ReduceSum": 13}


@converter(*REDUCE)
def _reduce(ctx: NodeContext):
    op = ctx.node.op_type
    x = ctx.tensor(0)
    keepdims = bool(ctx.int("keepdims", 1))
    if ctx.opset >= _AXES_AS_INPUT.get(op, 18):
        axes = ctx.const_ints(1, "axes") if ctx.has(1) else []
    else:
        axes = ctx.ints("axes", [])
    if not axes:
        if ctx.int("noop_with_empty_axes", 0):
            return x
        axes = None
    if x.dtype == DType.BOOL and op in ("ReduceMax", "ReduceMin"):
        # any / all, as counts: an empty any is False and an empty all is True
        if op == "ReduceMax":
            return dsl.sum(dsl.cast(x, DType.I32), axes, keepdims) > 0
        return dsl.sum(dsl.cast(dsl.logical_not(x), DType.I32), axes, keepdims) == 0
    if op == "ReduceMean" and not x.dtype.is_float:
        return dsl.cast(dsl.mean(x, axes, keepdims), x.dtype)
    if x.size == 0 and op in ("ReduceMax", "ReduceMin") and x.dtype.is_float:
        # NOTE: the identity of an empty max is -inf (and +inf for min), as in numpy's initial.
        shape = _reduced_shape(x.shape, axes, keepdims)
        fill = -np.inf if op == "ReduceMax" else np.inf
        return ctx.builder.const(np.full(shape, fill, x.dtype.np))
    return REDUCE[op](x, axes, keepdims)


def _reduced_shape(shape, axes, keepdims: bool) -> tuple[int, ...]:
    axes = P.norm_axes(axes, len(shape))
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


@converter("ArgMax")
def _argmax(ctx: NodeContext):
    if ctx.int("select_last_index", 0):
        raise ctx.error("select_last_index=1 is not supported")
    return dsl.argmax(ctx.tensor(0), ctx.int("axis", 0), bool(ctx.int("keepdims", 1)))
