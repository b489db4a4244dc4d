"""Gradient checking: `nnjit.grad` against central finite differences in float64.

    >>> check_grads(lambda x, w: nnjit.tanh(x @ w), (x, w), argnums=(0, 1), backend=backend)

Like JAX's `public_test_util.check_grads`, a vector-valued `fn` is turned into a scalar loss with
a fixed random linear functional, `loss = sum_k sum(out_k * ct_k)`, whose gradient is the VJP of
`fn` at the cotangents `ct_k`. The analytic gradient is `nnjit.grad(loss)` traced *inside* the
function that the backend compiles, so the backend runs the gradient graph itself; the numeric
one evaluates the loss compiled once by the same backend at `x +- eps * e_i`. Large arguments are
checked at a random sample of their elements (`max_elems` per argument leaf) to stay fast.

Arguments are pytrees of numpy arrays; the differentiated leaves must be float64 (finite
differences in float32 are too noisy to check anything).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

import nnjit
from nnjit.frontend.pytree import flatten, unflatten
from tests.helpers import run


def _is_float(x) -> bool:
    return np.asarray(x).dtype.kind == "f"


def scalarize(fn: Callable, args: Sequence[Any], backend: str, seed: int = 0) -> Callable:
    """`loss(*args) = sum_k sum(fn(*args)_k * ct_k)` over the float outputs of `fn`, with fixed
    random cotangents `ct_k` (drawn from `seed`, shaped like the outputs)."""
    outs = flatten(nnjit.jit(fn, backend=backend)(*args))[0]
    rng = np.random.default_rng(seed)
    cts = [rng.standard_normal(np.shape(o)).astype(np.asarray(o).dtype) if _is_float(o) else None
           for o in outs]
    if all(c is None for c in cts):
        raise ValueError("check_grads: fn has no float outputs to differentiate")

    def loss(*a):
        total = None
        for o, c in zip(flatten(fn(*a))[0], cts):
            if c is None:
                continue
            term = nnjit.sum(o * c)
            total = term if total is None else total + term
        return total

    loss.__name__ = f"{getattr(fn, '__name__', 'fn')}_vjp_loss"
    return loss


def _leaf_ranges(args: Sequence[Any]) -> list[range]:
    """The flat-leaf indices of each positional argument of `args`."""
    out, start = [], 0
    for a in args:
        n = len(flatten(a)[0])
        out.append(range(start, start + n))
        start += n
    return out


def numeric_grads(loss: Callable, args: Sequence[Any], argnums: Sequence[int], backend: str,
                  eps: float, max_elems: int | None, rng: np.random.Generator
                  ) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Central differences of scalar `loss`: {(argnum, leaf): (flat indices, d loss / d x[i])}."""
    f = nnjit.jit(loss, backend=backend)
    leaves, tree = flatten(tuple(args))
    leaves = [np.array(x, copy=True) if isinstance(x, (np.ndarray, np.generic)) else x
              for x in leaves]
    ranges = _leaf_ranges(args)
    out = {}
    for k in argnums:
        for j, li in enumerate(ranges[k]):
            x = leaves[li]
            if not (isinstance(x, np.ndarray) and x.dtype == np.float64):
                raise TypeError(f"check_grads: argument {k} leaf {j} must be a float64 numpy "
                                f"array, got {type(x).__name__} {getattr(x, 'dtype', '')}")
            n = x.size
            idx = np.arange(n)
            if max_elems is not None and n > max_elems:
                idx = np.sort(rng.choice(n, max_elems, replace=False))
            flat = x.reshape(-1)
            d = np.empty(len(idx))
            for t, i in enumerate(idx):
                orig = flat[i]
                flat[i] = orig + eps
                hi = float(f(*unflatten(tree, leaves)))
                flat[i] = orig - eps
                lo = float(f(*unflatten(tree, leaves)))
                flat[i] = orig
                d[t] = (hi - lo) / (2 * eps)
            out[(k, j)] = (idx, d)
    return out


def check_grads(fn: Callable, args: Sequence[Any], argnums: int | Sequence[int] = 0,
                backend: str = "interp", eps: float = 1e-6, rtol: float = 1e-5,
                atol: float = 1e-6, max_elems: int | None = 30, seed: int = 0,
                scalar: bool = False):
    """Assert that nnjit's gradient of `fn` w.r.t. `argnums` matches central finite differences.

    `fn` may return any pytree of tensors; unless `scalar=True` (fn already returns the scalar
    loss) it is reduced to a scalar with a random linear functional. Returns the analytic
    gradients (the structure `nnjit.grad(fn, argnums)` returns)."""
    args = tuple(args)
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    loss = fn if scalar else scalarize(fn, args, backend, seed)

    def grad_fn(*a):
        return nnjit.grad(loss, nums)(*a)

    analytic = run(grad_fn, *args, backend=backend)
    # Central differences of the reference forward: the ground truth the backend's gradient
    # must match (its forward is checked against the reference by every op case). On the CUDA
    # simulator, which runs Python per thread, differencing its own forward took minutes.
    fd_backend = "interp" if backend == "cuda" else backend
    assert isinstance(analytic, tuple) and len(analytic) == len(nums), (
        f"grad returned {type(analytic).__name__}, expected a tuple of {len(nums)} gradients")
    rng = np.random.default_rng(seed + 1)
    numeric = numeric_grads(loss, args, nums, fd_backend, eps, max_elems, rng)

    failures = []
    for pos, k in enumerate(nums):
        want_leaves, want_tree = flatten(args[k])
        got_leaves, got_tree = flatten(analytic[pos])
        assert got_tree == want_tree, (f"gradient of argument {k} has structure {got_tree}, "
                                       f"expected {want_tree}")
        for j, (g, x) in enumerate(zip(got_leaves, want_leaves)):
            g = np.asarray(g)
            where = f"argument {k}" + (f" leaf {j}" if len(want_leaves) > 1 else "")
            assert g.shape == np.shape(x) and g.dtype == np.asarray(x).dtype, (
                f"gradient of {where} is {g.dtype}{list(g.shape)}, expected "
                f"{np.asarray(x).dtype}{list(np.shape(x))}")
            assert np.all(np.isfinite(g)), f"gradient of {where} is not finite: {g}"
            idx, num = numeric[(k, j)]
            ana = g.reshape(-1)[idx]
            bad = np.abs(ana - num) > atol + rtol * np.abs(num)
            for i, a, n in zip(idx[bad], ana[bad], num[bad]):
                elem = np.unravel_index(i, g.shape) if g.ndim else ()
                failures.append(f"  {where}, element {tuple(int(e) for e in elem)}: "
                                f"analytic {a:.10g} vs numeric {n:.10g} (diff {abs(a - n):.3g})")
    if failures:
        shown = "\n".join(failures[:12])
        more = f"\n  ... and {len(failures) - 12} more" if len(failures) > 12 else ""
        raise AssertionError(f"gradient of {getattr(fn, '__name__', 'fn')} w.r.t. argnums "
                             f"{nums} differs from central finite differences (eps={eps}, "
                             f"rtol={rtol}, atol={atol}) at {len(failures)} checked "
                             f"element(s):\n{shown}{more}")
    return analytic[0] if single else analytic
