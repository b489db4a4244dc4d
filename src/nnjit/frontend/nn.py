"""The layer library (`nnjit.nn`): PyTorch-named layers over a functional core.

A `Module` holds hyperparameters and knows how to build its parameters; the parameters themselves
are a plain pytree (nested dicts of numpy arrays) whose flattened "a.b.c" names are the keys of
torch's `state_dict`, so they save to `.npz` without pickle and map one to one onto torch models.

    >>> model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    >>> params = model.init(seed=0)      # {"0": {"bias": (128,), "weight": (128, 64)}, "2": {...}}
    >>> logits = model.apply(params, x)  # pure: traced inside jit, compiled and run on arrays

`apply(params, *inputs, training=False, seed=None)` is a pure function of its arguments:
`training` switches Dropout on, and `seed` (an int or a traced i64 scalar; pass a new one each
step) keys its random masks.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..ir import NnjitError, ShapeError, Sym, user_loc
from ..ir import prims as P
from . import dsl
from .checkpoint import CheckpointNotFoundError, flatten_params, load, save  # noqa: F401
from .dsl import (  # noqa: F401
    avg_pool2d,
    conv2d,
    dropout,
    linear,
    log_softmax,
    max_pool2d,
    relu,
    sigmoid,
    softmax,
    tanh,
)
from .eager import eager
from .pytree import flatten

Params = dict


@dataclass(frozen=True)
class Context:
    """What one `apply` call passes down the module tree: the mode, the dropout seed and the
    module's path ("0", "encoder.1"), from which each Dropout layer derives its own salt."""

    training: bool = False
    seed: Any = None
    path: str = ""

    def child(self, name: str) -> "Context":
        return Context(self.training, self.seed, f"{self.path}.{name}" if self.path else name)


def _traced(*trees) -> bool:
    return any(isinstance(x, Sym) for x in flatten(trees)[0])


class Module:
    """Base class: hyperparameters in attributes, submodules registered in assignment order.

    Subclasses define `init_params(rng, dtype)` (their own leaves; children are added by `init`)
    and `forward(params, *inputs, ctx)`; a composite calls a child with
    `self.child("name", params, *inputs, ctx=ctx)`.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Module):
            self.__dict__.setdefault("_children", {})[name] = value
        object.__setattr__(self, name, value)

    def children(self) -> Iterator[tuple[str, "Module"]]:
        return iter(self.__dict__.get("_children", {}).items())

    # -- parameters -------------------------------------------------------------------------
    def init(self, seed: int = 0, dtype=np.float32) -> Params:
        """Fresh parameters (numpy arrays of `dtype`), reproducible from `seed`."""
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ShapeError(f"{type(self).__name__}.init: dtype must be float32 or float64, "
                             f"got {dt.name}")
        return self._init_tree(np.random.default_rng(seed), dt)

    def _init_tree(self, rng: np.random.Generator, dtype: np.dtype) -> Params:
        params = dict(self.init_params(rng, dtype))
        for name, m in self.children():
            sub = m._init_tree(rng, dtype)
            if sub:                     # parameterless children have no state_dict entry
                params[name] = sub
        return params

    def init_params(self, rng: np.random.Generator, dtype: np.dtype) -> Params:
        return {}

    # -- running ----------------------------------------------------------------------------
    def forward(self, params: Params, *inputs, ctx: Context):
        """What the module computes; every concrete layer defines it."""
        raise TypeError(f"{type(self).__name__} defines no forward()")

    def child(self, name: str, params: Params, *inputs, ctx: Context):
        """Run child module `name` on `inputs` with its part of `params`; what it traces is
        stamped with its module path (the loc's scope: "features.0"), so fusion reports,
        profiles and pictures can tell conv1 from conv2."""
        sub = ctx.child(name)
        module = self.__dict__["_children"][name]
        syms = [x for x in flatten((params, inputs))[0] if isinstance(x, Sym)]
        if not syms:
            return module.forward(params.get(name, {}), *inputs, ctx=sub)
        with syms[0].builder.in_scope(sub.path):
            return module.forward(params.get(name, {}), *inputs, ctx=sub)

    def apply(self, params: Params, *inputs, training: bool = False, seed=None):
        """The module's output for `inputs`. Traced when any argument is a traced tensor;
        otherwise compiled (once per signature) and run with the reference backend."""
        if _traced(params, inputs, seed):
            return self.forward(params, *inputs, ctx=Context(training, seed))
        seed = None if seed is None else np.asarray(seed, np.int64)
        return self._eager(training)(params, inputs, seed)

    __call__ = apply

    def _eager(self, training: bool):
        cache = self.__dict__.setdefault("_eager_cache", {})
        if training not in cache:
            def run(params, inputs, seed):
                return self.forward(params, *inputs, ctx=Context(training, seed))
            cache[training] = eager(run, type(self).__name__)
        return cache[training]

    # -- display ----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        kids = [f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in self.children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(kids) + "\n)" if kids else ")")


def _uniform(rng, shape, bound: float, dtype) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _fan_in_bound(fan_in: int) -> float:
    # torch's default: kaiming_uniform_(a=sqrt(5)) gives bound gain*sqrt(3/fan_in) with
    # gain = sqrt(2/(1+5)), i.e. 1/sqrt(fan_in); the bias uses the same bound.
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


# -- layers ---------------------------------------------------------------------------------------

class Linear(Module):
    """y = x @ weight.T + bias, weight (out_features, in_features) as in torch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        self.in_features, self.out_features, self.bias = in_features, out_features, bias

    def init_params(self, rng, dtype):
        bound = _fan_in_bound(self.in_features)
        p = {"weight": _uniform(rng, (self.out_features, self.in_features), bound, dtype)}
        if self.bias:
            p["bias"] = _uniform(rng, (self.out_features,), bound, dtype)
        return p

    def forward(self, params, x, *, ctx):
        return linear(x, params["weight"], params.get("bias"))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias}"


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v)


class Conv2d(Module):
    """2-d convolution of NCHW inputs with an OIHW weight (torch.nn.Conv2d): weight
    [out_channels, in_channels / groups, kh, kw]; groups == in_channels is depthwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True):
        _check_groups(type(self).__name__, in_channels, out_channels, groups)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation, self.bias = stride, padding, dilation, bias
        self.groups = groups

    def init_params(self, rng, dtype):
        kh, kw = self.kernel_size
        cg = self.in_channels // self.groups
        bound = _fan_in_bound(cg * kh * kw)
        p = {"weight": _uniform(rng, (self.out_channels, cg, kh, kw), bound, dtype)}
        if self.bias:
            p["bias"] = _uniform(rng, (self.out_channels,), bound, dtype)
        return p

    def forward(self, params, x, *, ctx):
        return conv2d(x, params["weight"], params.get("bias"), self.stride, self.padding,
                      self.dilation, self.groups)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
               f"stride={self.stride}, padding={self.padding}" + (
                   f", groups={self.groups}" if self.groups != 1 else "")


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, params, x, *, ctx):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad: bool = True):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.count_include_pad = count_include_pad

    def forward(self, params, x, *, ctx):
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


# -- convolution family (issue 12) --

def _check_groups(layer: str, in_channels: int, out_channels: int, groups: int) -> None:
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ShapeError(f"{layer}: in_channels {in_channels} and out_channels {out_channels} "
                         f"must both be divisible by groups {groups}")


class Conv1d(Module):
    """1-d convolution of NCL inputs (torch.nn.Conv1d): weight
    [out_channels, in_channels / groups, kernel_size], bias [out_channels]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True):
        _check_groups("Conv1d", in_channels, out_channels, groups)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = int(kernel_size[0] if isinstance(kernel_size, (tuple, list))
                               else kernel_size)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.bias = groups, bias

    def init_params(self, rng, dtype):
        cg = self.in_channels // self.groups
        bound = _fan_in_bound(cg * self.kernel_size)
        p = {"weight": _uniform(rng, (self.out_channels, cg, self.kernel_size), bound, dtype)}
        if self.bias:
            p["bias"] = _uniform(rng, (self.out_channels,), bound, dtype)
        return p

    def forward(self, params, x, *, ctx):
        return dsl.conv1d(x, params["weight"], params.get("bias"), self.stride, self.padding,
                          self.dilation, self.groups)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
               f"stride={self.stride}, padding={self.padding}, groups={self.groups}"


class ConvTranspose2d(Module):
    """Transposed 2-d convolution (torch.nn.ConvTranspose2d): weight
    [in_channels, out_channels / groups, kh, kw], bias [out_channels]. The output side is
    (H - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1):
        _check_groups("ConvTranspose2d", in_channels, out_channels, groups)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.groups, self.bias, self.dilation = groups, bias, dilation

    def init_params(self, rng, dtype):
        kh, kw = self.kernel_size
        og = self.out_channels // self.groups
        bound = _fan_in_bound(og * kh * kw)          # torch's fan_in: weight dim 1 x kernel
        p = {"weight": _uniform(rng, (self.in_channels, og, kh, kw), bound, dtype)}
        if self.bias:
            p["bias"] = _uniform(rng, (self.out_channels,), bound, dtype)
        return p

    def forward(self, params, x, *, ctx):
        return dsl.conv_transpose2d(x, params["weight"], params.get("bias"), self.stride,
                                    self.padding, self.output_padding, self.groups,
                                    self.dilation)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
               f"stride={self.stride}, padding={self.padding}, " \
               f"output_padding={self.output_padding}"


class Upsample(Module):
    """torch.nn.Upsample: resize NCHW inputs to `size` or by `scale_factor`, mode 'nearest'
    or 'bilinear' (see `nnjit.upsample`)."""

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest",
                 align_corners: bool | None = None):
        self.size, self.scale_factor = size, scale_factor
        self.mode, self.align_corners = mode, align_corners

    def forward(self, params, x, *, ctx):
        return dsl.upsample(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else \
            f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"


class _AdaptivePool2d(Module):
    def __init__(self, output_size=1):
        self.output_size = output_size

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """torch.nn.AdaptiveAvgPool2d for output size 1 (global average pooling, [N, C, 1, 1]) or
    one that divides the input; other sizes raise a ShapeError when traced."""

    def forward(self, params, x, *, ctx):
        return dsl.adaptive_avg_pool2d(x, self.output_size)


class AdaptiveMaxPool2d(_AdaptivePool2d):
    """torch.nn.AdaptiveMaxPool2d (no indices) for output size 1 or one dividing the input."""

    def forward(self, params, x, *, ctx):
        return dsl.adaptive_max_pool2d(x, self.output_size)


class Dropout(Module):
    """Zeroes elements with probability p while training (scaling the rest by 1/(1-p)); the
    identity in eval mode. Each layer salts the Philox stream with a hash of its path in the
    module tree, so two Dropout layers never share a mask. NOTE: bit 30 of the salt is set, so
    it cannot meet the small salts `nnjit.dropout` picks by default (0, 1, 2, ...)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ShapeError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, params, x, *, ctx):
        if not ctx.training or self.p == 0.0:
            return x
        if ctx.seed is None:
            raise NnjitError(f"Dropout at '{ctx.path or 'top'}': apply(..., training=True) "
                             "needs a seed= (an int or a traced i64 scalar, new each step)")
        salt = (zlib.crc32(ctx.path.encode()) & 0x3FFFFFFF) | 0x40000000
        return dropout(x, self.p, ctx.seed, training=True, salt=salt)

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """Flattens dims start_dim..end_dim into one (torch.nn.Flatten: by default all but batch)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, params, x, *, ctx):
        s, e = self.start_dim % x.ndim, self.end_dim % x.ndim
        return P.reshape(x, x.shape[:s] + (-1,) + x.shape[e + 1:])


class ReLU(Module):
    def forward(self, params, x, *, ctx):
        return relu(x)


class Tanh(Module):
    def forward(self, params, x, *, ctx):
        return tanh(x)


class Sigmoid(Module):
    def forward(self, params, x, *, ctx):
        return sigmoid(x)


class Embedding(Module):
    """A lookup table: integer indices of any shape -> their rows of weight (num, dim)."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim

    def init_params(self, rng, dtype):
        return {"weight": rng.standard_normal((self.num_embeddings, self.embedding_dim)
                                              ).astype(dtype)}

    def forward(self, params, idx, *, ctx):
        return dsl.take(params["weight"], idx, axis=0)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Sequential(Module):
    """Children named "0", "1", ...; each one's output is the next one's input."""

    def __init__(self, *modules: Module):
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def forward(self, params, x, *, ctx):
        for name, _ in self.children():
            x = self.child(name, params, x, ctx=ctx)
        return x

    def __getitem__(self, i: int) -> Module:
        return list(self.__dict__.get("_children", {}).values())[i]

    def __len__(self) -> int:
        return len(self.__dict__.get("_children", {}))


# -- recurrent layers ---------------------------------------------------------------------------

class _Recurrent(Module):
    """Shared by RNN and LSTM: torch's single-layer parameter names and init (every tensor
    U(-1/sqrt(hidden), 1/sqrt(hidden))), inputs time-major (T, B, input_size)."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias

    def init_params(self, rng, dtype):
        n, h = self.gates * self.hidden_size, self.hidden_size
        bound = _fan_in_bound(h)
        p = {"weight_ih_l0": _uniform(rng, (n, self.input_size), bound, dtype),
             "weight_hh_l0": _uniform(rng, (n, h), bound, dtype)}
        if self.bias:
            p["bias_ih_l0"] = _uniform(rng, (n,), bound, dtype)
            p["bias_hh_l0"] = _uniform(rng, (n,), bound, dtype)
        return p

    def _input_projection(self, params, x):
        """x @ W_ih.T + b_ih + b_hh for every step at once: one (T*B, I) x (I, n) GEMM instead
        of T small ones inside the loop."""
        name = type(self).__name__
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ShapeError(f"expected input (T, B, {self.input_size}), got {x.shape}", name,
                             user_loc())
        if x.shape[0] == 0:
            # torch.nn.RNN/LSTM refuse T=0 too ("Expected sequence length to be larger than 0");
            # an empty batch (B=0) is fine and gives empty outputs, as in torch.
            raise ShapeError(f"the input sequence is empty: x has shape {x.shape} (T=0 steps); "
                             f"torch.nn.{name} refuses T=0 too", name, user_loc())
        t, b, _ = x.shape
        xw = linear(P.reshape(x, (t * b, self.input_size)), params["weight_ih_l0"])
        if self.bias:
            xw = xw + (params["bias_ih_l0"] + params["bias_hh_l0"])
        return P.reshape(xw, (t, b, self.gates * self.hidden_size))

    def _zeros(self, x):
        return np.zeros((x.shape[1], self.hidden_size), x.dtype.np)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}"


class RNN(_Recurrent):
    """Elman RNN, h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), run as one `scan`.

    `apply(params, x, h0=None)` with x (T, B, input_size) returns (outputs (T, B, H), h_T (B, H)).
    """

    def forward(self, params, x, h0=None, *, ctx):
        x = _as_traced(x, params)
        xw = self._input_projection(params, x)
        w_hh = params["weight_hh_l0"]

        def step(h, xw_t):
            h = tanh(xw_t + linear(h, w_hh))
            return h, h

        h_t, ys = dsl.scan(step, self._zeros(x) if h0 is None else h0, xw)
        return ys, h_t


class LSTM(_Recurrent):
    """Long short-term memory, torch's gate order (input, forget, cell, output), run as one
    `scan` (never unrolled):

        i, f, g, o = split(x_t W_ih^T + b_ih + h W_hh^T + b_hh)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g);   h' = sigmoid(o) * tanh(c')

    `apply(params, x, state=None)` with x (T, B, input_size) and state (h0, c0) of (B, H) each
    returns (outputs (T, B, H), (h_T, c_T)).
    """

    gates = 4

    def forward(self, params, x, state=None, *, ctx):
        x = _as_traced(x, params)
        xw = self._input_projection(params, x)
        w_hh, hs = params["weight_hh_l0"], self.hidden_size

        def step(carry, xw_t):
            h, c = carry
            z = xw_t + linear(h, w_hh)
            i, f, g, o = (z[:, k * hs:(k + 1) * hs] for k in range(4))
            c = sigmoid(f) * c + sigmoid(i) * tanh(g)
            h = sigmoid(o) * tanh(c)
            return (h, c), h

        init = (self._zeros(x), self._zeros(x)) if state is None else tuple(state)
        (h_t, c_t), ys = dsl.scan(step, init, xw)
        return ys, (h_t, c_t)


def _as_traced(x, params) -> Sym:
    if isinstance(x, Sym):
        return x
    syms = [v for v in flatten(params)[0] if isinstance(v, Sym)]
    if not syms:
        raise ShapeError("expected traced inputs or parameters (call inside jit, or via apply)")
    return P.lift(P.builder_of(*syms), x)[0]


# -- losses -------------------------------------------------------------------------------------

def cross_entropy(logits, labels, ignore_index: int = -100) -> Sym:
    """Mean over the labels of -log softmax(logits)[label]: logits (N, C) (or (..., C)), integer
    labels (N,) (or (...)). Labels equal to `ignore_index` (-100 by default, as in torch) add
    nothing and are not counted (all ignored: NaN, as torch); any other label outside [0, C)
    raises IndexOutOfRange at run time. The label pick is a class mask times log_softmax,
    summed, which fuses into the softmax's reduction instead of needing a gather."""
    if not isinstance(labels, Sym):
        labels = P.lift(P.builder_of(logits), np.asarray(labels))[0]
    if not labels.dtype.is_int:
        raise ShapeError(f"cross_entropy: labels must be integers, got {labels.type}")
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ShapeError(f"cross_entropy: labels {labels.shape} must be logits {logits.shape} "
                         "without the class dim")
    classes = logits.shape[-1]
    labels = P.check_index(labels, classes, f"cross_entropy: labels for {classes} classes",
                           negative=False, ignore=(ignore_index,))
    mask = dsl.class_mask(labels, classes, exclude=ignore_index)
    # Checked labels have one class each (ignored ones none), so the mask's sum counts them:
    # both sums share the softmax's reduction domain, and with it one kernel.
    mask = P.cast(mask, logits.dtype)
    return -P.reduce_sum(mask * log_softmax(logits, -1)) / P.reduce_sum(mask)


def mse(pred, target) -> Sym:
    """Mean squared error over all elements."""
    d = pred - target
    return dsl.mean(d * d)


def num_params(params: Params) -> int:
    return int(sum(np.asarray(x).size for x in flatten(params)[0]))


__all__ = ["AvgPool2d", "CheckpointNotFoundError", "Context", "Conv2d", "Dropout", "Embedding",
           "Flatten", "LSTM", "Linear", "MaxPool2d", "Module", "RNN", "ReLU", "Sequential",
           "Sigmoid", "Tanh", "avg_pool2d", "conv2d", "cross_entropy", "dropout",
           "flatten_params", "linear", "load", "log_softmax", "max_pool2d", "mse", "num_params",
           "relu", "save", "sigmoid", "softmax", "tanh"]
__all__ += ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Conv1d", "ConvTranspose2d",  # issue 12
            "Upsample"]
