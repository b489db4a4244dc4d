"""The layer library (`nnjit.nn`): PyTorch-named layers over a functional core.

A `Module` holds hyperparameters and knows how to build its parameters; the parameters themselves
are a plain pytree (nested dicts of numpy arrays) whose flattened "a.b.c" names are the keys of
torch's `state_dict`, so they save to `.npz` without pickle and map one to one onto torch models.

    >>> model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    >>> params = model.init(seed=0)      # {"0": {"bias": (128,), "weight": (128, 64)}, "2": {...}}
    >>> logits = model.apply(params, x)  # pure: traced inside jit, compiled and run on arrays

`apply(params, *inputs, training=False, seed=None, state=None)` is a pure function of its
arguments: `training` switches Dropout on, and `seed` (an int or a traced i64 scalar; pass a new
one each step) keys its random masks. Running statistics (BatchNorm) are state, not parameters:
`model.init_state()` makes them, and `apply(..., state=state)` returns `(output, new_state)`,
updated in training mode, as passed in eval mode:

    >>> def loss_fn(p, state):
    ...     out, state = model.apply(p, x, training=True, state=state)
    ...     return nn.cross_entropy(out, y), state
    >>> (loss, state), grads = nnjit.value_and_grad(loss_fn, has_aux=True)(params, state)

Recurrent layers live in `recurrent.py`, losses in `losses.py`, `Module` in `module.py`; all
are re-exported here.
"""
from __future__ import annotations

import zlib

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
from .losses import *  # noqa: F401,F403  (the loss functions: nn.cross_entropy, nn.kl_div, ...)
from .losses import __all__ as _losses_all
from .module import Context, Module, Params, Run, as_traced, fan_in_bound, uniform  # noqa: F401
from .pytree import flatten
from .tracing import trace_flat
from .recurrent import *  # noqa: F401,F403  (nn.RNN, nn.LSTM, nn.GRU and the cells)
from .recurrent import __all__ as _recurrent_all

_uniform, _fan_in_bound, _as_traced = uniform, fan_in_bound, as_traced


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


# -- activation modules (issue 12): torch's names and arguments --
class GELU(Module):
    """torch.nn.GELU: approximate="none" (erf) or "tanh"."""

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ShapeError(f"approximate must be 'none' or 'tanh', got {approximate!r}",
                             "GELU", user_loc())
        self.approximate = approximate

    def forward(self, params, x, *, ctx):
        return dsl.gelu(x, approximate=self.approximate)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = negative_slope

    def forward(self, params, x, *, ctx):
        return dsl.leaky_relu(x, self.negative_slope)


class ELU(Module):
    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def forward(self, params, x, *, ctx):
        return dsl.elu(x, self.alpha)


class Identity(Module):
    """torch.nn.Identity: returns its input; constructor arguments are accepted and ignored."""

    def __init__(self, *args, **kwargs):
        pass

    def forward(self, params, x, *, ctx):
        return x


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


# -- layers (issue 12) ----------------------------------------------------------------------------

def _features(shape, name: str) -> tuple[int, ...]:
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    if not shape or any(d < 1 for d in shape):
        raise ShapeError(f"{name}: normalized_shape must be positive sizes, got {shape}")
    return shape


def _moments(x: Sym, axes: tuple[int, ...]) -> tuple[Sym, Sym]:
    """Mean and biased variance over `axes` (kept as size-1 dims), from the centred values
    (not E[x^2] - E[x]^2, which cancels catastrophically for large means)."""
    mean = dsl.mean(x, axes, keepdims=True)
    d = x - mean
    return mean, dsl.mean(d * d, axes, keepdims=True)


def _normalize(x: Sym, mean: Sym, var: Sym, eps: float) -> Sym:
    return (x - mean) / P.sqrt(var + eps)


class LayerNorm(Module):
    """Normalizes over the trailing `normalized_shape` dims (biased variance, as torch), then
    scales by weight and shifts by bias (ones and zeros at init) when `elementwise_affine`."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True):
        self.normalized_shape = _features(normalized_shape, "LayerNorm")
        self.eps, self.elementwise_affine, self.bias = eps, elementwise_affine, bias

    def init_params(self, rng, dtype):
        if not self.elementwise_affine:
            return {}
        p = {"weight": np.ones(self.normalized_shape, dtype)}
        if self.bias:
            p["bias"] = np.zeros(self.normalized_shape, dtype)
        return p

    def forward(self, params, x, *, ctx):
        x = as_traced(x, params)
        k = len(self.normalized_shape)
        if x.shape[x.ndim - k:] != self.normalized_shape or x.ndim < k:
            raise ShapeError(f"input {x.shape} must end in normalized_shape "
                             f"{self.normalized_shape}", "LayerNorm", user_loc())
        y = _normalize(x, *_moments(x, tuple(range(x.ndim - k, x.ndim))), self.eps)
        if "weight" in params:
            y = y * params["weight"]
        return y + params["bias"] if "bias" in params else y

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, " \
               f"elementwise_affine={self.elementwise_affine}"


class _BatchNorm(Module):
    """Normalizes each channel (dim 1) over the batch and the other dims. Training uses the
    batch's statistics and, with `track_running_stats`, returns updated running ones through
    `apply(..., state=...)` (running = (1 - momentum) running + momentum batch, the variance
    unbiased, as torch; momentum=None: the cumulative average); eval mode uses the running
    statistics. The running statistics are state (`init_state()`), not parameters."""

    ndims: tuple[int, ...] = ()
    layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats

    def init_params(self, rng, dtype):
        if not self.affine:
            return {}
        return {"weight": np.ones(self.num_features, dtype),
                "bias": np.zeros(self.num_features, dtype)}

    def init_buffers(self, dtype):
        if not self.track_running_stats:
            return {}
        return {"running_mean": np.zeros(self.num_features, dtype),
                "running_var": np.ones(self.num_features, dtype),
                "num_batches_tracked": np.zeros((), np.int64)}

    def forward(self, params, x, *, ctx):
        name = type(self).__name__
        x = as_traced(x, params)
        c = self.num_features
        if x.ndim not in self.ndims or x.shape[1] != c:
            raise ShapeError(f"expected input {self.layout.format(c=c)}, got {x.shape}", name,
                             user_loc())
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, c) + (1,) * (x.ndim - 2)
        if ctx.training or not self.track_running_stats:
            mean, var = _moments(x, axes)
            if ctx.training and self.track_running_stats:
                self._update(ctx, x, P.reshape(mean, (c,)), P.reshape(var, (c,)), name)
        else:
            st = ctx.state(name)
            mean = P.reshape(as_traced(st["running_mean"], x), bshape)
            var = P.reshape(as_traced(st["running_var"], x), bshape)
        y = _normalize(x, mean, var, self.eps)
        if self.affine:
            y = y * P.reshape(params["weight"], bshape) + P.reshape(params["bias"], bshape)
        return y

    def _update(self, ctx, x: Sym, mean: Sym, var: Sym, name: str) -> None:
        n = int(np.prod([x.shape[a] for a in range(x.ndim) if a != 1]))
        if n <= 1:
            raise ShapeError(f"expected more than 1 value per channel when training, got input "
                             f"{x.shape} (as torch)", name, user_loc())
        st = {k: as_traced(v, x) for k, v in ctx.state(name).items()}
        count = st["num_batches_tracked"] + 1
        f = self.momentum if self.momentum is not None else 1.0 / P.cast(count, x.dtype)
        mean, var = P.stop_gradient(mean), P.stop_gradient(var) * (n / (n - 1))
        ctx.update_state({"running_mean": (1.0 - f) * st["running_mean"] + f * mean,
                          "running_var": (1.0 - f) * st["running_var"] + f * var,
                          "num_batches_tracked": count})

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, " \
               f"affine={self.affine}, track_running_stats={self.track_running_stats}"


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) inputs (torch.nn.BatchNorm1d)."""

    ndims, layout = (2, 3), "(N, {c}) or (N, {c}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) inputs (torch.nn.BatchNorm2d)."""

    ndims, layout = (4,), "(N, {c}, H, W)"


class MultiheadAttention(Module):
    """torch.nn.MultiheadAttention (kdim = vdim = embed_dim): parameters in_proj_weight
    (3E, E), in_proj_bias (3E,) and out_proj.{weight, bias}, initialized as torch (Xavier
    uniform in-projection, zero biases).

    `apply(params, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True)` with inputs (L, N, E) ((N, L, E) with batch_first, or unbatched
    (L, E)) returns (output like query, weights (N, L, S) averaged over heads, (N, H, L, S)
    otherwise, or None without need_weights). Masks as torch: a bool mask is True where
    attention is not allowed; a float mask is added to the scores. attn_mask is (L, S) or
    (N * num_heads, L, S); key_padding_mask (N, S).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False):
        if num_heads < 1 or embed_dim % num_heads:
            raise ShapeError(f"MultiheadAttention: embed_dim {embed_dim} must be divisible by "
                             f"num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.bias, self.batch_first = bias, batch_first
        self.out_proj = Linear(embed_dim, embed_dim, bias)

    def init_params(self, rng, dtype):
        e = self.embed_dim
        p = {"in_proj_weight": _uniform(rng, (3 * e, e), np.sqrt(6.0 / (4 * e)), dtype)}
        if self.bias:
            p["in_proj_bias"] = np.zeros(3 * e, dtype)
        return p

    def _init_tree(self, rng, dtype):
        params = super()._init_tree(rng, dtype)
        if self.bias:
            params["out_proj"]["bias"] = np.zeros_like(params["out_proj"]["bias"])
        return params

    def forward(self, params, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, *, ctx):
        e, h = self.embed_dim, self.num_heads
        q, k, v = (as_traced(t, params, query, key, value) for t in (query, key, value))
        if q.ndim not in (2, 3) or not q.ndim == k.ndim == v.ndim or any(
                t.shape[-1] != e for t in (q, k, v)):
            raise ShapeError(f"query, key and value must all be (L, N, {e}) (or batch-first, or "
                             f"unbatched (L, {e})), got {q.shape}, {k.shape}, {v.shape}",
                             "MultiheadAttention", user_loc())
        unbatched = q.ndim == 2
        q, k, v = (self._batch_major(t, unbatched) for t in (q, k, v))   # (N, L, E)
        if k.shape[:2] != v.shape[:2] or k.shape[0] != q.shape[0]:
            raise ShapeError(f"key {k.shape} and value {v.shape} must agree, and share the "
                             f"query's batch", "MultiheadAttention", user_loc())
        w, b = params["in_proj_weight"], params.get("in_proj_bias")
        heads = [self._heads(linear(t, w[i * e:(i + 1) * e], None if b is None else
                                    b[i * e:(i + 1) * e]))
                 for i, t in enumerate((q, k, v))]                       # (N, H, L, E/H)
        qh, kh, vh = heads
        scores = P.matmul(qh * (1.0 / np.sqrt(e // h)), P.transpose(kh, (0, 1, 3, 2)))
        n, _, l_len, s_len = scores.shape
        if attn_mask is not None:
            m = as_traced(attn_mask, q)
            if m.shape == (n * h, l_len, s_len):
                m = P.reshape(m, (n, h, l_len, s_len))
            elif m.shape != (l_len, s_len):
                raise ShapeError(f"attn_mask must be ({l_len}, {s_len}) or ({n * h}, {l_len}, "
                                 f"{s_len}), got {m.shape}", "MultiheadAttention", user_loc())
            scores = _masked(scores, m)
        if key_padding_mask is not None:
            m = as_traced(key_padding_mask, q)
            if m.shape != ((s_len,) if unbatched else (n, s_len)):
                raise ShapeError(f"key_padding_mask must be (N, S) = ({n}, {s_len}), got "
                                 f"{m.shape}", "MultiheadAttention", user_loc())
            scores = _masked(scores, P.reshape(m, (n, 1, 1, s_len)))
        attn = softmax(scores, -1)
        if ctx.training and self.dropout > 0.0:
            if ctx.seed is None:
                raise NnjitError(f"MultiheadAttention at '{ctx.path or 'top'}': dropout in "
                                 "training needs apply(..., seed=...)")
            salt = (zlib.crc32(ctx.path.encode()) & 0x3FFFFFFF) | 0x40000000
            attn_used = dsl.dropout(attn, self.dropout, ctx.seed, training=True, salt=salt)
        else:
            attn_used = attn
        o = P.transpose(P.matmul(attn_used, vh), (0, 2, 1, 3))           # (N, L, H, E/H)
        o = self.child("out_proj", params, P.reshape(o, (n, l_len, e)), ctx=ctx)
        o = P.reshape(o, (l_len, e)) if unbatched else (
            o if self.batch_first else P.transpose(o, (1, 0, 2)))
        if not need_weights:
            return o, None
        # As torch, the weights returned are the ones used (after dropout, when training).
        weights = dsl.mean(attn_used, 1) if average_attn_weights else attn_used
        return o, (P.reshape(weights, weights.shape[1:]) if unbatched else weights)

    def _batch_major(self, t: Sym, unbatched: bool) -> Sym:
        if unbatched:
            return P.reshape(t, (1,) + t.shape)
        return t if self.batch_first else P.transpose(t, (1, 0, 2))

    def _heads(self, t: Sym) -> Sym:
        n, length, e = t.shape
        return P.transpose(P.reshape(t, (n, length, self.num_heads, e // self.num_heads)),
                           (0, 2, 1, 3))

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"


def _masked(scores: Sym, mask: Sym) -> Sym:
    """torch's attention masks: bool True = not allowed (-inf), float = added to the score."""
    if mask.dtype.is_float:
        return scores + P.cast(mask, scores.dtype)
    return P.where(mask, -np.inf, scores)


def summary(model: Module, *example_inputs, params: Params | None = None,
            state: Params | None = None, training: bool = False, print_fn=print) -> str:
    """A torchinfo-style table of `model` run on `example_inputs` (arrays, traced only: nothing
    is compiled): every module's path and type, its output shape and its parameter count
    (its children's included), then the totals. Printed with `print_fn` (None: not printed)
    and returned.

        >>> nn.summary(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), np.zeros((2, 4), np.float32))
        Layer (type)          Output shape     Param #
        ...
    """
    params = model.init() if params is None else params
    state = (model.init_state() or None) if state is None else state
    record: list = []

    def traced(p, xs):
        ctx = Context(training, 0 if training else None, "", Run(state, record))
        return model.call(p, *xs, ctx=ctx)

    trace_flat(traced, (params, tuple(example_inputs)), name="summary")
    rows = [(("  " * (path.count(".") + 1) + path.rsplit(".", 1)[-1] + ": " if path else "")
             + type(m).__name__, _shapes(out), num_params(_subtree(params, path)))
            for path, m, out in record]
    w0 = max(len("Layer (type)"), *(len(r[0]) for r in rows)) + 2
    w1 = max(len("Output shape"), *(len(r[1]) for r in rows)) + 2
    rule = "=" * (w0 + w1 + 12)
    lines = [rule, f"{'Layer (type)':<{w0}}{'Output shape':<{w1}}{'Param #':>12}", rule]
    lines += [f"{a:<{w0}}{b:<{w1}}{c:>12,}" for a, b, c in rows]
    total = num_params(params)
    size = sum(np.asarray(v).nbytes for v in flatten(params)[0])
    lines += [rule, f"Total params: {total:,}",
              f"State (running statistics): {num_params(state or {}):,}",
              f"Params size (MB): {size / 1e6:.2f}", rule]
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return text


def _subtree(params: Params, path: str) -> Params:
    for part in path.split(".") if path else []:
        params = params.get(part, {}) if isinstance(params, dict) else {}
    return params


def _shapes(out) -> str:
    leaves = [v for v in flatten(out)[0] if isinstance(v, Sym)]
    return ", ".join(str(list(v.shape)) for v in leaves) or "-"


def num_params(params: Params) -> int:
    return int(sum(np.asarray(x).size for x in flatten(params)[0]))


__all__ = ["AvgPool2d", "CheckpointNotFoundError", "Context", "Conv2d", "Dropout", "Embedding",
           "Flatten", "LSTM", "Linear", "MaxPool2d", "Module", "RNN", "ReLU", "Sequential",
           "Sigmoid", "Tanh", "avg_pool2d", "conv2d", "cross_entropy", "dropout",
           "flatten_params", "linear", "load", "log_softmax", "max_pool2d", "mse", "num_params",
           "relu", "save", "sigmoid", "softmax", "tanh"]
__all__ += ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Conv1d", "ConvTranspose2d",  # issue 12
            "Upsample"]
__all__ += ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "MultiheadAttention", "summary"]
__all__ += [n for n in _losses_all + _recurrent_all if n not in __all__]
