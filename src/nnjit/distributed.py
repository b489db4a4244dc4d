"""Data-parallel training across processes: collectives over the ranks of `mpiexec -n N`.

Each function maps over a pytree. On traced tensors (inside `nnjit.jit`) it emits the
collective ops (`all_reduce`, `all_gather`, `reduce_scatter`, `broadcast`), which the compiled
step runs through MPI; on numpy arrays it runs the collective at once (initial parameters,
metrics). Outside mpiexec a process is a group of one: every collective is the identity and
mpi4py is never imported.

    import nnjit.distributed as dist

    params = dist.broadcast(params, root=0)             # every rank starts from rank 0's

    @nnjit.jit
    def step(params, x, y):                             # x, y: this rank's shard
        loss, grads = nnjit.value_and_grad(loss_fn)(params, x, y)
        grads = dist.pmean(grads, axis_name="batch")    # bucketed into a few all-reduces
        return sgd(params, grads), dist.pmean(loss)

`rank()` and `size()` are plain ints, fixed for the process (shapes may depend on them). Every
axis name denotes the whole world (one data-parallel axis); NNJIT_MPI_TIMEOUT bounds every wait.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .backends.collective import CollectiveError, CollectiveMismatch, world
from .frontend.pytree import tree_map
from .ir import Sym
from .ir import prims as P

DEFAULT_AXIS = "batch"


def rank() -> int:
    """This process's rank in the world (0 outside mpiexec)."""
    return world().rank


def size() -> int:
    """The number of processes (1 outside mpiexec)."""
    return world().size


def _apply(tree, traced, eager) -> Any:
    return tree_map(lambda x: traced(x) if isinstance(x, Sym) else eager(np.asarray(x)), tree)


def _eager(op: str, x: np.ndarray, attrs: dict) -> np.ndarray:
    g = world()
    src = np.asarray(x, order="C")
    n, axis = g.size, attrs.get("axis", 0)
    shape = src.shape
    if op == "all_gather":
        shape = shape[:axis] + (shape[axis] * n,) + shape[axis + 1:]
    elif op == "reduce_scatter":
        if shape[axis] % n:
            raise CollectiveError(f"reduce_scatter: dim {axis} of shape {shape} is not "
                                  f"divisible by the group size {n}")
        shape = shape[:axis] + (shape[axis] // n,) + shape[axis + 1:]
    dst = np.empty(shape, src.dtype)
    g.wait(g.start(op, src, dst, attrs), f"{op} (eager)")
    return dst


def _reduce(tree, reduce: str, axis_name: str):
    n = size()
    attrs = {"reduce": reduce, "axis_name": axis_name, "group_size": n}
    return _apply(tree, lambda x: P.all_reduce(x, reduce, axis_name, n),
                  lambda x: _eager("all_reduce", x, attrs))


def psum(tree, axis_name: str = DEFAULT_AXIS):
    """The sum of every leaf over the processes."""
    return _reduce(tree, "sum", axis_name)


def pmean(tree, axis_name: str = DEFAULT_AXIS):
    """The mean of every (float) leaf over the processes: averaged gradients."""
    return _reduce(tree, "mean", axis_name)


def pmax(tree, axis_name: str = DEFAULT_AXIS):
    """The elementwise maximum of every leaf over the processes."""
    return _reduce(tree, "max", axis_name)


def _axis(x, axis: int) -> int:
    ndim = len(np.shape(x)) if not isinstance(x, Sym) else x.ndim
    return axis + ndim if -ndim <= axis < 0 else axis


def all_gather(tree, axis: int = 0, axis_name: str = DEFAULT_AXIS):
    """Every leaf's per-process values concatenated along `axis`, in rank order."""
    n = size()
    return _apply(tree, lambda x: P.all_gather(x, _axis(x, axis), axis_name, n),
                  lambda x: _eager("all_gather", x, {"axis": _axis(x, axis)}))


def psum_scatter(tree, axis: int = 0, axis_name: str = DEFAULT_AXIS):
    """Block `rank()` (along `axis`) of every leaf's sum over the processes (JAX's name)."""
    n = size()
    return _apply(tree, lambda x: P.reduce_scatter(x, _axis(x, axis), axis_name, n),
                  lambda x: _eager("reduce_scatter", x, {"axis": _axis(x, axis)}))


def broadcast(tree, root: int = 0, axis_name: str = DEFAULT_AXIS):
    """Process `root`'s value of every leaf, on every process."""
    n = size()
    if not 0 <= root < n:
        raise CollectiveError(f"broadcast: root {root} is not a rank of {n} processes")
    return _apply(tree, lambda x: P.broadcast(x, root, axis_name, n),
                  lambda x: _eager("broadcast", x, {"root": root}))


def shard(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """This process's contiguous share of `x` along `axis` (the global batch split evenly;
    the length must be divisible by `size()`)."""
    n, r = size(), rank()
    if x.shape[axis] % n:
        raise CollectiveError(f"shard: dim {axis} of shape {x.shape} is not divisible by the "
                              f"{n} processes")
    k = x.shape[axis] // n
    return np.take(x, np.arange(r * k, (r + 1) * k), axis=axis)


__all__ = ["CollectiveError", "CollectiveMismatch", "DEFAULT_AXIS", "all_gather", "broadcast",
           "pmax", "pmean", "psum", "psum_scatter", "rank", "shard", "size"]
