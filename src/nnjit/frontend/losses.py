"""Loss functions (`nnjit.nn.<name>`) with torch.nn.functional's names, arguments and
`reduction=` ('mean', 'sum', 'none'). All are composites of registry ops: no VJP of their own.

    >>> nn.binary_cross_entropy_with_logits(logits, targets, pos_weight=w)   # a scalar
    >>> nn.smooth_l1_loss(pred, target, reduction="none", beta=0.5)          # pred's shape
"""
from __future__ import annotations

import numpy as np

from ..ir import ShapeError, Sym, user_loc
from ..ir import prims as P
from . import dsl
from .dsl import log_softmax, logsumexp

REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Sym, reduction: str, name: str, allowed=REDUCTIONS) -> Sym:
    if reduction == "mean":
        return dsl.mean(loss)
    if reduction == "sum":
        return P.reduce_sum(loss)
    if reduction == "none" and "none" in allowed:
        return loss
    raise ShapeError(f"reduction must be one of {', '.join(map(repr, allowed))}, got "
                     f"{reduction!r}", name, user_loc())


def _pair(name: str, input, target) -> tuple[Sym, Sym]:
    """input and target as traced tensors of one shape (torch requires it for these losses)."""
    syms = [v for v in (input, target) if isinstance(v, Sym)]
    if not syms:
        raise ShapeError("expected traced tensors (call inside jit)", name, user_loc())
    input, target = P.lift(P.builder_of(*syms), input, target)
    if input.shape != target.shape:
        raise ShapeError(f"target {target.shape} must have the input's shape {input.shape}",
                         name, user_loc())
    if not input.dtype.is_float:
        raise ShapeError(f"input must be floating point, got {input.type}", name, user_loc())
    return input, P.cast(target, input.dtype)


def _weighted(loss: Sym, weight, name: str) -> Sym:
    if weight is None:
        return loss
    w = P.lift(P.builder_of(loss), weight)[0]
    try:
        np.broadcast_shapes(w.shape, loss.shape)
    except ValueError:
        raise ShapeError(f"weight {w.shape} does not broadcast to the loss {loss.shape}", name,
                         user_loc()) from None
    return loss * w


# -- classification -------------------------------------------------------------------------------

def cross_entropy(logits, labels, ignore_index: int = -100) -> Sym:
    """Mean over the labels of -log softmax(logits)[label]: logits (N, C) (or (..., C)), integer
    labels (N,) (or (...)). Labels equal to `ignore_index` (-100 by default, as in torch) add
    nothing and are not counted (all ignored: NaN, as torch); any other label outside [0, C)
    raises IndexOutOfRange at run time.

    Everything over (N, C) happens per row, so it fuses into the softmax's row loop: the label
    pick is a row sum of the logits selected by a class mask (no gather, no (N, C) mask in
    memory; a select, not a product, so a -inf logit of another class stays out of it),
    and only the N per-row losses are summed across rows. The gradient, softmax minus the mask,
    is one elementwise pass in the same row loop."""
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
    counted = P.ne(labels, ignore_index)
    # An ignored row adds exactly 0 to the loss and gets a zero gradient, even when its logits
    # are not finite (torch's loss is the same; its gradient there is NaN).
    logits = P.where(P.reshape(counted, counted.shape + (1,)), logits, 0.0)
    picked = P.reduce_sum(P.where(dsl.class_mask(labels, classes, exclude=ignore_index),
                                  logits, 0.0), -1)
    per_row = P.where(counted, logsumexp(logits, -1) - picked, 0.0)
    return P.reduce_sum(per_row) / P.reduce_sum(P.cast(counted, logits.dtype))


def nll_loss(input, target, weight=None, ignore_index: int = -100,
             reduction: str = "mean") -> Sym:
    """torch.nn.functional.nll_loss: -input[n, target[n]] (times weight[target[n]]), input of
    log-probabilities (N, C), (C,) or (N, C, d1, ...) with the classes in dim 1, as torch.
    'mean' divides by the summed weights of the counted targets; `ignore_index` targets add
    nothing; any other target outside [0, C) raises IndexOutOfRange at run time."""
    name = "nll_loss"
    if not isinstance(input, Sym) or input.ndim < 1:
        raise ShapeError("input must be a traced (N, C) or (C,) tensor", name, user_loc())
    target = P.lift(P.builder_of(input), target)[0]
    if not target.dtype.is_int:
        raise ShapeError(f"target must be integers, got {target.type}", name, user_loc())
    # Classes last: (N, C, d...) -> (N, d..., C), so the target's shape is input's without C.
    if input.ndim > 1:
        input = P.transpose(input, (0,) + tuple(range(2, input.ndim)) + (1,))
    if target.shape != input.shape[:-1]:
        raise ShapeError(f"target {target.shape} must be the input's shape without the class "
                         f"dim, {input.shape[:-1]}", name, user_loc())
    classes = input.shape[-1]
    target = P.check_index(target, classes, f"{name}: targets for {classes} classes",
                           negative=False, ignore=(ignore_index,))
    mask = dsl.class_mask(target, classes, exclude=ignore_index)
    # Selected, not multiplied by the mask: 0 * -inf (log 0 of another class) would be NaN.
    picked_input = P.where(mask, input, 0.0)
    counted = P.ne(target, ignore_index)
    if weight is None:
        target_weight = P.cast(counted, input.dtype)
    else:
        w = P.lift(P.builder_of(input), weight)[0]
        if w.shape != (classes,):
            raise ShapeError(f"weight must be ({classes},), got {w.shape}", name, user_loc())
        w = P.cast(w, input.dtype)
        picked_input = picked_input * w
        # Targets are checked above; an ignored one is clamped here and then zeroed.
        target_weight = P.where(counted, P.take(w, target, mode="promise_in_bounds"), 0.0)
    picked = -P.reduce_sum(picked_input, -1)           # per target, weighted; 0 where ignored
    if reduction == "mean":
        # The divisor comes from the targets alone (N values), not from the (N, C) mask, so
        # the gradient needs no second pass over a materialized mask.
        return P.reduce_sum(picked) / P.reduce_sum(target_weight)
    return _reduce(picked, reduction, name)


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean") -> Sym:
    """-(t log p + (1 - t) log(1 - p)) for probabilities p; each log is clamped at -100, as
    torch does, so p = 0 or 1 gives a finite loss."""
    p, t = _pair("binary_cross_entropy", input, target)
    log_p = P.maximum(P.log(p), -100.0)
    log_q = P.maximum(P.log(1.0 - p), -100.0)
    loss = -(t * log_p + (1.0 - t) * log_q)
    return _reduce(_weighted(loss, weight, "binary_cross_entropy"), reduction,
                   "binary_cross_entropy")


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean",
                                     pos_weight=None) -> Sym:
    """BCE of sigmoid(x), computed stably as (1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)
    (softplus itself is stable for large |x|); `pos_weight` weighs the positive term, per class
    (broadcast over the last dim) as in torch."""
    name = "binary_cross_entropy_with_logits"
    x, t = _pair(name, input, target)
    sp = P.softplus(-x)                                  # -log sigmoid(x)
    if pos_weight is None:
        loss = (1.0 - t) * x + sp
    else:
        pw = P.cast(P.lift(P.builder_of(x), pos_weight)[0], x.dtype)
        loss = (1.0 - t) * x + (1.0 + (pw - 1.0) * t) * sp
        if loss.shape != x.shape:
            raise ShapeError(f"pos_weight {pw.shape} does not broadcast to the input "
                             f"{x.shape}", name, user_loc())
    return _reduce(_weighted(loss, weight, name), reduction, name)


# -- regression -----------------------------------------------------------------------------------

def mse(pred, target) -> Sym:
    """Mean squared error over all elements."""
    d = pred - target
    return dsl.mean(d * d)


def mse_loss(input, target, reduction: str = "mean") -> Sym:
    x, t = _pair("mse_loss", input, target)
    d = x - t
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(input, target, reduction: str = "mean") -> Sym:
    x, t = _pair("l1_loss", input, target)
    return _reduce(P.abs(x - t), reduction, "l1_loss")


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0) -> Sym:
    """0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (beta = 0: the L1 loss)."""
    if beta < 0:
        raise ShapeError(f"beta must be >= 0, got {beta}", "smooth_l1_loss", user_loc())
    x, t = _pair("smooth_l1_loss", input, target)
    a = P.abs(x - t)
    if beta == 0:
        return _reduce(a, reduction, "smooth_l1_loss")
    # The quadratic branch squares min(|d|, beta), so it never overflows where it is not taken.
    q = P.minimum(a, beta)
    loss = P.where(P.lt(a, beta), (0.5 / beta) * q * q, a - 0.5 * beta)
    return _reduce(loss, reduction, "smooth_l1_loss")


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0) -> Sym:
    """0.5 d^2 where |d| <= delta, delta (|d| - 0.5 delta) elsewhere: smooth_l1 times delta."""
    if delta <= 0:
        raise ShapeError(f"delta must be > 0, got {delta}", "huber_loss", user_loc())
    x, t = _pair("huber_loss", input, target)
    a = P.abs(x - t)
    q = P.minimum(a, delta)
    loss = P.where(P.le(a, delta), 0.5 * q * q, delta * (a - 0.5 * delta))
    return _reduce(loss, reduction, "huber_loss")


# -- distributions --------------------------------------------------------------------------------

def kl_div(input, target, reduction: str = "mean", log_target: bool = False) -> Sym:
    """torch.nn.functional.kl_div: `input` is log q; pointwise target * (log target - input),
    0 where target = 0 (or exp(t) * (t - input) with log_target). 'batchmean' divides the sum
    by the batch size (input.shape[0]), the true KL divergence per example. NOTE: where
    target = 0 the gradient w.r.t. the target leaves out d(t log t)/dt (infinite there; torch
    gives NaN) and is -input."""
    name = "kl_div"
    x, t = _pair(name, input, target)
    if log_target:
        loss = P.exp(t) * (t - x)
    else:
        # torch's xlogy(t, t) - t x, with log's operand made safe where t = 0 so the unused
        # branch's gradient stays finite (0 * log 0 would be NaN).
        pos = P.gt(t, 0.0)
        loss = P.where(pos, t * P.log(P.where(pos, t, 1.0)), 0.0) - t * x
    if reduction == "batchmean":
        return P.reduce_sum(loss) / float(x.shape[0] if x.ndim else 1)
    return _reduce(loss, reduction, name, REDUCTIONS + ("batchmean",))


__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
           "huber_loss", "kl_div", "l1_loss", "mse", "mse_loss", "nll_loss", "smooth_l1_loss"]
