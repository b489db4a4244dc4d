"""The user-facing op functions, exported as `nnjit.<name>`.

Signatures follow what users already know: torch.nn.functional where it has the op (`conv2d`,
`max_pool2d`, `dropout`, `linear`), numpy for array ops (`concat`, `where`, `take`, `pad`, with
numpy's `axis` naming), and jax.lax for `scan`. Primitives come from `nnjit.ir.prims`;
`mean`, `softmax`, `log_softmax`, `logsumexp`, `one_hot`, `dropout`, `linear` and `stack` are
composites built from them here (they need no VJP and no lowering of their own).
"""
from __future__ import annotations

import builtins
from typing import Any, Callable, Sequence

import numpy as np

from ..ir import Builder, DType, Graph, Op, ShapeError, Sym, TensorType, user_loc
from ..ir import composites as C
from ..ir import indexing as ix
from ..ir import prims as P
from ..ir.prims import builder_of, located
from . import einsum as _einsum
from .conv import (  # noqa: F401  (contractions and windows are part of the DSL)
    conv2d, max_pool2d, avg_pool2d, linear, conv1d, conv_transpose2d, upsample, global_avg_pool2d,
    global_max_pool2d, adaptive_avg_pool2d, adaptive_max_pool2d,
)
from .pytree import flatten, unflatten
from .tracing import leaf_type

# -- elementwise (primitives re-exported under numpy names) -----------------------------------
add, subtract, multiply = P.add, P.sub, P.mul
sub, mul = P.sub, P.mul
negative = neg = P.neg
exp, log, sqrt, tanh, sigmoid, relu = P.exp, P.log, P.sqrt, P.tanh, P.sigmoid, P.relu
softplus = P.softplus
abs = P.abs  # noqa: A001
maximum, minimum, where = P.maximum, P.minimum, P.where
equal, not_equal, less, less_equal, greater, greater_equal = P.eq, P.ne, P.lt, P.le, P.gt, P.ge
logical_and, logical_or, logical_not = P.logical_and, P.logical_or, P.logical_not
stop_gradient, matmul = P.stop_gradient, P.matmul
reshape, broadcast_to = P.reshape, P.broadcast_to


def cast(x, dtype) -> Sym:
    """`x` converted to `dtype` (a numpy dtype or nnjit DType)."""
    return P.cast(x, dtype)


# True division and power: integer operands are converted to f32 first (prims does it).
divide = div = P.div
power = pow = P.pow  # noqa: A001


def square(x) -> Sym:
    return x * x


# -- reductions -------------------------------------------------------------------------------

def sum(x: Sym, axis=None, keepdims: bool = False) -> Sym:  # noqa: A001
    return P.reduce_sum(x, axis, keepdims)


def mean(x: Sym, axis=None, keepdims: bool = False) -> Sym:
    return P.mean(x, axis, keepdims)


def max(x: Sym, axis=None, keepdims: bool = False) -> Sym:  # noqa: A001
    return P.reduce_max(x, axis, keepdims)


def min(x: Sym, axis=None, keepdims: bool = False) -> Sym:  # noqa: A001
    return x.min(axis, keepdims)   # exact for integers too (see Sym.min)


def argmax(x: Sym, axis: int | None = None, keepdims: bool = False) -> Sym:
    """numpy.argmax (i64): the first maximum (a NaN counts as the maximum); `axis=None`, the
    default as in numpy and JAX, indexes the flattened tensor."""
    if axis is None:
        flat = P.argmax(P.reshape(x, (-1,)), 0, False)
        return P.reshape(flat, (1,) * x.ndim) if keepdims else flat
    return P.argmax(x, axis, keepdims)


def logsumexp(x: Sym, axis=-1, keepdims: bool = False) -> Sym:
    """log(sum(exp(x))) computed stably by shifting by the (gradient-stopped) max."""
    _check_axes("logsumexp", x, axis)
    m = P.stop_gradient(P.reduce_max(x, axis, keepdims=True))
    # Shift by 0 where the max is not finite: rows of all -inf stay -inf and rows with +inf
    # give +inf (as jax.nn.logsumexp and scipy do), not NaN from inf - inf.
    m = P.where(P.lt(P.abs(m), np.inf), m, 0.0)
    out = P.log(P.reduce_sum(P.exp(x - m), axis, keepdims=True)) + m
    return out if keepdims else P.reshape(out, tuple(
        d for i, d in enumerate(x.shape) if i not in P.norm_axes(axis, x.ndim)))


def _check_axes(op: str, x: Sym, axis) -> None:
    """Axis errors of a composite name the composite (`softmax`), not the primitive inside."""
    try:
        P.norm_axes(axis, x.ndim)
    except ShapeError as e:
        raise located(e, op, x) from None


def log_softmax(x: Sym, axis: int = -1) -> Sym:
    _check_axes("log_softmax", x, axis)
    return x - logsumexp(x, axis, keepdims=True)


def softmax(x: Sym, axis: int = -1) -> Sym:
    _check_axes("softmax", x, axis)
    m = P.stop_gradient(P.reduce_max(x, axis, keepdims=True))
    e = P.exp(x - m)
    return e / P.reduce_sum(e, axis, keepdims=True)


# -- math, activations, reductions, creation (issue 12) -------------------------------------------
sin, cos, erf, expm1, log1p = P.sin, P.cos, P.erf, P.expm1, P.log1p
floor, ceil, round, floor_divide = P.floor, P.ceil, P.round, P.floor_divide  # noqa: A001
sign, clip = C.sign, C.clip
var, std, argmin, any, all, cumsum = C.var, C.std, C.argmin, C.any, C.all, C.cumsum  # noqa: A001

_SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))
# torch.nn.functional.selu's constants (Klambauer et al. 2017)
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def prod(x: Sym, axis=None, keepdims: bool = False) -> Sym:
    """numpy.prod; an empty product is 1. The gradient is exact where x has zeros."""
    return P.reduce_prod(x, axis, keepdims)


def gelu(x: Sym, approximate: bool | str = False) -> Sym:
    """x * Phi(x): exact, 0.5 x (1 + erf(x / sqrt 2)), or with `approximate=True` (or torch's
    "tanh") 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). NOTE: the default is the exact
    form, as torch's; jax.nn.gelu defaults to approximate=True."""
    if approximate not in (False, True, "none", "tanh"):
        raise ShapeError(f"approximate must be a bool, 'none' or 'tanh', got {approximate!r}",
                         "gelu", user_loc())
    if approximate in (True, "tanh"):
        inner = (x + x * x * x * 0.044715) * _SQRT_2_OVER_PI
        return x * 0.5 * (P.tanh(inner) + 1.0)
    return x * 0.5 * (P.erf(x * float(np.sqrt(0.5))) + 1.0)


def leaky_relu(x: Sym, negative_slope: float = 0.01) -> Sym:
    """x where x >= 0, negative_slope * x elsewhere (torch.nn.functional.leaky_relu)."""
    return P.where(P.ge(x, 0), x, x * negative_slope)


def elu(x: Sym, alpha: float = 1.0) -> Sym:
    """x where x > 0, alpha * expm1(x) elsewhere (expm1 keeps small negatives accurate; the
    min with 0 keeps the unused branch finite)."""
    return P.where(P.gt(x, 0), x, P.expm1(P.minimum(x, 0.0)) * alpha)


def selu(x: Sym) -> Sym:
    """scale * elu(x, alpha) with torch's constants."""
    return elu(x, _SELU_ALPHA) * _SELU_SCALE


def hard_sigmoid(x: Sym) -> Sym:
    """torch's hardsigmoid: relu6(x + 3) / 6 (0 up to -3, 1 from 3, nan stays nan), with
    torch's gradient: 1/6 strictly inside (-3, 3), 0 at and beyond the corners."""
    inside = P.logical_and(P.gt(x, -3.0), P.lt(x, 3.0))
    outside = P.where(P.ge(x, 3.0), 1.0, P.where(P.le(x, -3.0), 0.0, x))
    return P.where(inside, x / 6.0 + 0.5, outside)


def _creation_dtype(dtype, default=DType.F32) -> DType:
    """A creation op's dtype: None gives `default`; numpy dtypes, Python types and DTypes are
    taken as they are (numpy's other widths are refused by DType.from_numpy)."""
    if dtype is None:
        return default
    if isinstance(dtype, DType):
        return dtype
    return DType.from_numpy(np.dtype(dtype))


def _shape_arg(shape) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not builtins.all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
        raise ShapeError(f"shape must be non-negative ints, got {shape}", "zeros", user_loc())
    return tuple(int(d) for d in shape)


def full(shape, fill_value, dtype=None) -> np.ndarray:
    """numpy.full. Creation functions return numpy constants: inside a traced function they
    become constant nodes when they meet a tensor (folded into the kernels that use them), so
    shapes are static and nothing is computed at run time. The default dtype is f32 (ints
    and bools given as `fill_value` keep i64 / bool), nnjit's default float, not numpy's f64."""
    if dtype is None:
        v = np.asarray(fill_value)
        dtype = DType.BOOL if v.dtype == np.bool_ else DType.I64 if v.dtype.kind in "iu" \
            else DType.F32
    return np.full(_shape_arg(shape), fill_value, dtype=_creation_dtype(dtype).np)


def zeros(shape, dtype=None) -> np.ndarray:
    """numpy.zeros (f32 by default); see `full`."""
    return np.zeros(_shape_arg(shape), dtype=_creation_dtype(dtype).np)


def ones(shape, dtype=None) -> np.ndarray:
    """numpy.ones (f32 by default); see `full`."""
    return np.ones(_shape_arg(shape), dtype=_creation_dtype(dtype).np)


def arange(start, stop=None, step=1, dtype=None) -> np.ndarray:
    """numpy.arange with static bounds: i64 when start, stop and step are ints, else f32."""
    args = [a for a in (start, stop, step) if a is not None]
    if builtins.any(isinstance(a, Sym) for a in args):
        raise ShapeError("arange needs static (Python number) bounds: shapes are static",
                         "arange", user_loc())
    integral = builtins.all(isinstance(a, (int, np.integer)) for a in args)
    out = np.arange(start, stop, step) if stop is not None else np.arange(start, step=step)
    return out.astype(_creation_dtype(dtype, DType.I64 if integral else DType.F32).np)


def eye(N: int, M: int | None = None, k: int = 0, dtype=None) -> np.ndarray:
    """numpy.eye (f32 by default): ones on the k-th diagonal of an N x M matrix."""
    return np.eye(int(N), None if M is None else int(M), int(k),
                  dtype=_creation_dtype(dtype).np)



# -- data movement ----------------------------------------------------------------------------

def transpose(x: Sym, axes: Sequence[int] | None = None) -> Sym:
    return P.transpose(x, tuple(reversed(range(x.ndim))) if axes is None else axes)


def concat(xs: Sequence[Any], axis: int = 0) -> Sym:
    return P.concat(list(xs), axis)


concatenate = concat


def stack(xs: Sequence[Any], axis: int = 0) -> Sym:
    xs = list(xs)
    if not xs:
        raise ShapeError("needs at least one tensor", "stack", user_loc())
    b = builder_of(*xs)
    xs = P.lift(b, *xs)
    try:
        axis = P.norm_axis(axis, xs[0].ndim + 1)
    except ShapeError as e:
        raise located(e, "stack", *xs) from None
    return P.concat([P.reshape(x, x.shape[:axis] + (1,) + x.shape[axis:]) for x in xs], axis)


def pad(x: Sym, pad_width, constant_values: float = 0.0) -> Sym:
    """numpy.pad with mode='constant': `pad_width` is an int, a (before, after) pair, or one pair
    per dim."""
    if isinstance(pad_width, (int, np.integer)):
        pads = [(int(pad_width), int(pad_width))] * x.ndim
    else:
        pw = [tuple(p) if isinstance(p, (tuple, list)) else p for p in pad_width]
        if len(pw) == 2 and builtins.all(isinstance(p, (int, np.integer)) for p in pw):
            pads = [tuple(pw)] * x.ndim
        else:
            pads = pw
    return P.pad(x, pads, constant_values)


def take(x: Sym, indices, axis: int | None = None, mode: str = "raise",
         fill_value=None) -> Sym:
    """numpy.take (axis=None takes from the flattened array). An index outside [-n, n) raises
    IndexOutOfRange at run time; `mode="clip"`, `"wrap"` or `"fill"` (with `fill_value`) opt
    out, as in numpy and jax.numpy (see `nnjit.ir.prims.take`)."""
    if axis is None:
        x, axis = P.reshape(x, (-1,)), 0
    return P.take(x, indices, axis, mode=mode, fill_value=fill_value)


def remainder(x, y) -> Sym:
    """numpy.remainder (also `x % y`): the result takes the sign of the divisor."""
    return P.remainder(x, y)


def one_hot(indices: Sym, num_classes: int, dtype=np.float32) -> Sym:
    """out[..., k] = (indices[...] == k), as `dtype`. An index outside [0, num_classes) raises
    IndexOutOfRange at run time (as torch.nn.functional.one_hot does)."""
    if not isinstance(indices, Sym) or not indices.dtype.is_int:
        what = indices.type if isinstance(indices, Sym) else type(indices).__name__
        raise ShapeError(f"indices must be integers, got {what}", "one_hot", user_loc())
    checked = P.check_index(indices, num_classes, f"one_hot: {num_classes} classes",
                            negative=False)
    return P.cast(class_mask(checked, num_classes), dtype)


def class_mask(labels: Sym, num_classes: int, exclude: int | None = None) -> Sym:
    """Boolean out[..., k] = (labels[...] == k) and k != exclude, unchecked (labels outside
    [0, num_classes) give a zero row). Everything is computed over the (..., classes) domain,
    so it fuses into a reduction over it."""
    classes = P.iota(builder_of(labels), labels.shape + (num_classes,), labels.ndim,
                     labels.dtype)
    mask = P.eq(classes, P.reshape(labels, labels.shape + (1,)))
    if exclude is not None and 0 <= exclude < num_classes:
        mask = P.logical_and(mask, P.ne(classes, exclude))
    return mask


# -- movement/indexing ops (issue 12) --
squeeze, expand_dims, split, flip = ix.squeeze, ix.expand_dims, ix.split, ix.flip
tile, repeat, take_along_axis = ix.tile, ix.repeat, ix.take_along_axis
einsum = _einsum.einsum


# -- randomness -------------------------------------------------------------------------------

def dropout(x: Sym, rate: float, seed, training: bool = True, salt: int | None = None) -> Sym:
    """Zero each element with probability `rate` and scale the rest by 1/(1-rate).

    The mask is Philox(seed, (element index, salt)): the same on every backend. `seed` is an
    int or a traced i64 scalar (pass a new one each step); `salt` defaults to the number of
    random ops already in the trace, so two dropout layers draw different masks."""
    if not training or rate == 0.0:
        return x
    if not 0.0 <= rate <= 1.0:
        raise ShapeError(f"rate must be in [0, 1], got {rate}", "dropout", user_loc())
    b = builder_of(x, seed)
    if rate == 1.0:
        return x * 0.0
    seed = seed if isinstance(seed, Sym) else b.const(np.int64(seed))
    if salt is None:
        salt = sum_random_nodes(b)
    u = P.random_uniform(seed, x.shape, salt, x.dtype if x.dtype.is_float else DType.F32)
    return P.where(P.ge(u, rate), x * (1.0 / (1.0 - rate)), 0.0)


def sum_random_nodes(b: Builder) -> int:
    """The random ops already traced in `b`, in the traces enclosing it (a scan body, a grad's
    forward) and in the bodies nested in their nodes: the next auto salt, so no two dropouts
    of one jit draw the same mask."""
    def count(nodes) -> int:  # NOTE: `sum` is nnjit.sum in this module
        k = 0
        for n in nodes:
            k += n.op == Op.RANDOM_UNIFORM
            for v in n.attrs.values():
                k += count(v.nodes) if isinstance(v, Graph) else 0
        return k

    total = 0
    while b is not None:
        total += count(b.nodes)
        b = b.parent
    return total


# -- control flow -----------------------------------------------------------------------------

def scan(body: Callable, init, xs, length: int | None = None, reverse: bool = False):
    """jax.lax.scan: `body(carry, x_t) -> (carry, y_t)` over the leading axis of `xs` (pytrees),
    returning `(final_carry, stacked_ys)`. Compiles to one `scan` op, not an unrolled loop."""
    c_leaves, c_tree = flatten(init)
    x_leaves, x_tree = flatten(xs)
    syms = [v for v in c_leaves + x_leaves if isinstance(v, Sym)]
    if not syms:
        raise ShapeError("init or xs must contain a traced tensor (call scan inside a "
                         "jit/trace)", "scan", user_loc())
    b = builder_of(*syms)
    c_leaves = [v if isinstance(v, Sym) else _leaf_const(b, v) for v in c_leaves]
    x_leaves = [v if isinstance(v, Sym) else _leaf_const(b, v) for v in x_leaves]
    lengths = {x.shape[0] if x.ndim else None for x in x_leaves}
    if None in lengths:
        raise ShapeError("every xs leaf needs a leading axis to scan over", "scan", user_loc())
    if length is not None:
        lengths.add(length)
    if len(lengths) != 1:
        raise ShapeError(f"xs leading dims / length disagree: {sorted(lengths, key=str)}",
                         "scan", user_loc())
    (n,) = lengths
    child = Builder(f"{b.name}_scan_body", parent=b)
    c_in = [child.input(c.type, f"carry{i}") for i, c in enumerate(c_leaves)]
    x_in = [child.input(TensorType(x.shape[1:], x.dtype), f"x{i}") for i, x in enumerate(x_leaves)]
    out = body(unflatten(c_tree, c_in), unflatten(x_tree, x_in))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ShapeError("body must return a pair (new_carry, y)", "scan", user_loc())
    new_c, new_c_tree = flatten(out[0])
    if new_c_tree != c_tree:
        raise ShapeError(f"body returned a carry of structure {new_c_tree}, but init is "
                         f"{c_tree}", "scan", user_loc())
    # A Python scalar returned as a carry is weakly typed: it takes the carry's dtype.
    new_c = [v if isinstance(v, Sym) else _leaf_const(
        child, v, old.dtype if isinstance(v, (bool, int, float)) else None)
        for v, old in zip(new_c, c_leaves)]
    for i, (old, new) in enumerate(zip(c_leaves, new_c)):
        if old.type != new.type:
            raise ShapeError(f"carry {i} changes type from {old.type} to {new.type} in the "
                             "body (the carry must keep its shape and dtype)", "scan", user_loc())
    y_leaves, y_tree = flatten(out[1])
    y_leaves = [v if isinstance(v, Sym) else _leaf_const(child, v) for v in y_leaves]
    graph = child.build(new_c + y_leaves)
    consts = [outer for outer, _ in child.captures]
    res = P.scan(graph, c_leaves, x_leaves, consts, n, reverse)
    k = len(c_leaves)
    return unflatten(c_tree, res[:k]), unflatten(y_tree, res[k:])


def _leaf_const(b: Builder, v, dtype: DType | None = None) -> Sym:
    """A non-traced pytree leaf as a constant of its own type (as if it were passed to jit:
    False stays bool, np.int32(0) stays i32), or of `dtype`."""
    return b.const(np.asarray(v, dtype=(dtype or leaf_type(v).dtype).np))


__all__ = [n for n in dir() if not n.startswith("_") and n not in (
    "annotations", "Any", "Callable", "Sequence", "np", "Builder", "DType", "Graph", "Op",
    "ShapeError", "Sym",
    "TensorType", "P", "C", "ix", "builtins", "builder_of", "flatten", "unflatten", "leaf_type",
    "sum_random_nodes")]
