"""`Module` and `Context`, the base of the layer library (`nnjit.nn`): parameters and state as
plain pytrees, and what one `apply` call passes down the module tree (mode, dropout seed, path,
running state)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..ir import NnjitError, ShapeError, Sym
from ..ir import prims as P
from .eager import eager
from .pytree import flatten

Params = dict


class Run:
    """What every module of one `apply` call shares: the state pytree passed in (None when the
    caller passed none), the updates layers write ("1.bn" -> new state), and, for
    `nn.summary`, a record of every module call (None when not summarizing)."""

    def __init__(self, state: Params | None = None, record: list | None = None):
        self.state, self.updates, self.record = state, {}, record

    def new_state(self) -> Params | None:
        """The state passed in, with every updated module's entries replaced."""
        if self.state is None:
            return None
        out = _copy_dicts(self.state)
        for path, value in self.updates.items():
            node = out
            for part in path.split(".")[:-1] if path else []:
                node = node[part]
            if path:
                node[path.split(".")[-1]] = value
            else:
                out = value
        return out


def _copy_dicts(tree):
    return {k: _copy_dicts(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


@dataclass(frozen=True)
class Context:
    """What one `apply` call passes down the module tree: the mode, the dropout seed and the
    module's path ("0", "encoder.1"), from which each Dropout layer derives its own salt, and
    the call's shared `Run` (the running state of BatchNorm layers)."""

    training: bool = False
    seed: Any = None
    path: str = ""
    run: Run | None = None

    def child(self, name: str) -> "Context":
        return Context(self.training, self.seed, f"{self.path}.{name}" if self.path else name,
                       self.run)

    def state(self, who: str) -> Params:
        """This module's part of the state passed to `apply(..., state=...)`; `who` names the
        layer in the error when no state was passed."""
        node = None if self.run is None else self.run.state
        for part in self.path.split(".") if self.path else []:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            mode = "training updates" if self.training else "eval mode uses"
            raise NnjitError(f"{who} at '{self.path or 'top'}': {mode} its running statistics: "
                             "pass state=model.init_state() to apply (it then returns "
                             "(output, new_state))")
        return node

    def update_state(self, value: Params) -> None:
        self.run.updates[self.path] = value


def _traced(*trees) -> bool:
    return any(isinstance(x, Sym) for x in flatten(trees)[0])


class Module:
    """Base class: hyperparameters in attributes, submodules registered in assignment order.

    Subclasses define `init_params(rng, dtype)` (their own leaves; children are added by `init`)
    and `forward(params, *inputs, ctx)`; a composite calls a child with
    `self.child("name", params, *inputs, ctx=ctx)`. Layers with running state (BatchNorm) also
    define `init_buffers(dtype)`; `init_state()` gathers them into a pytree shaped like the
    parameters, which `apply(..., state=state)` reads and returns updated.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Module):
            self.__dict__.setdefault("_children", {})[name] = value
        object.__setattr__(self, name, value)

    def children(self) -> Iterator[tuple[str, "Module"]]:
        return iter(self.__dict__.get("_children", {}).items())

    # -- parameters and state ---------------------------------------------------------------
    def init(self, seed: int = 0, dtype=np.float32) -> Params:
        """Fresh parameters (numpy arrays of `dtype`), reproducible from `seed`."""
        return self._init_tree(np.random.default_rng(seed), _float_dtype(self, dtype))

    def _init_tree(self, rng: np.random.Generator, dtype: np.dtype) -> Params:
        params = dict(self.init_params(rng, dtype))
        for name, m in self.children():
            sub = m._init_tree(rng, dtype)
            if sub:                     # parameterless children have no state_dict entry
                params[name] = sub
        return params

    def init_params(self, rng: np.random.Generator, dtype: np.dtype) -> Params:
        return {}

    def init_state(self, dtype=np.float32) -> Params:
        """The running state (BatchNorm's running_mean, running_var, num_batches_tracked) as a
        pytree shaped like the parameters; {} for a model without any."""
        dt = _float_dtype(self, dtype)
        state = dict(self.init_buffers(dt))
        for name, m in self.children():
            sub = m.init_state(dt)
            if sub:
                state[name] = sub
        return state

    def init_buffers(self, dtype: np.dtype) -> Params:
        return {}

    # -- running ----------------------------------------------------------------------------
    def forward(self, params: Params, *inputs, ctx: Context):
        """What the module computes; every concrete layer defines it."""
        raise TypeError(f"{type(self).__name__} defines no forward()")

    def child(self, name: str, params: Params, *inputs, ctx: Context, **options):
        """Run child module `name` on `inputs` with its part of `params`; what it traces is
        stamped with its module path (the loc's scope: "features.0"), so fusion reports,
        profiles and pictures can tell conv1 from conv2."""
        sub = ctx.child(name)
        module = self.__dict__["_children"][name]
        syms = [x for x in flatten((params, inputs))[0] if isinstance(x, Sym)]
        if not syms:
            return module.call(params.get(name, {}), *inputs, ctx=sub, **options)
        with syms[0].builder.in_scope(sub.path):
            return module.call(params.get(name, {}), *inputs, ctx=sub, **options)

    def call(self, params: Params, *inputs, ctx: Context, **options):
        """`forward`, recorded for `nn.summary` when it is summarizing."""
        record = None if ctx.run is None else ctx.run.record
        if record is None:
            return self.forward(params, *inputs, ctx=ctx, **options)
        entry = [ctx.path, self, None]        # appended first: parents list before children
        record.append(entry)
        entry[2] = self.forward(params, *inputs, ctx=ctx, **options)
        return entry[2]

    def apply(self, params: Params, *inputs, training: bool = False, seed=None, state=None,
              **options):
        """The module's output for `inputs`. Traced when any argument is a traced tensor;
        otherwise compiled (once per signature and set of non-array `options`) and run with
        the reference backend. With `state` (from `init_state()`), returns
        `(output, new_state)`: in training mode BatchNorm layers update their running
        statistics, in eval mode they use them. `options` go to `forward` by keyword
        (MultiheadAttention's masks, need_weights, ...)."""
        if _traced(params, inputs, seed, state, options):
            run = Run(state)
            out = self.call(params, *inputs, ctx=Context(training, seed, "", run), **options)
            return out if state is None else (out, run.new_state())
        seed = None if seed is None else np.asarray(seed, np.int64)
        arrays = {k: v for k, v in options.items() if isinstance(v, np.ndarray)}
        static = tuple(sorted((k, v) for k, v in options.items() if k not in arrays))
        return self._eager(training, state is not None, static)(params, inputs, arrays, seed,
                                                                state)

    __call__ = apply

    def _eager(self, training: bool, stateful: bool, static: tuple):
        cache = self.__dict__.setdefault("_eager_cache", {})
        key = (training, stateful, static)
        if key not in cache:
            def run(params, inputs, arrays, seed, state):
                return self.apply(params, *inputs, training=training, seed=seed, state=state,
                                  **arrays, **dict(static))
            cache[key] = eager(run, type(self).__name__)
        return cache[key]

    # -- display ----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        kids = [f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in self.children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(kids) + "\n)" if kids else ")")


def _float_dtype(module: Module, dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ShapeError(f"{type(module).__name__}.init: dtype must be float32 or float64, "
                         f"got {dt.name}")
    return dt


def uniform(rng, shape, bound: float, dtype) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def fan_in_bound(fan_in: int) -> float:
    # torch's default: kaiming_uniform_(a=sqrt(5)) gives bound gain*sqrt(3/fan_in) with
    # gain = sqrt(2/(1+5)), i.e. 1/sqrt(fan_in); the bias uses the same bound.
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


def as_traced(x, *trees) -> Sym:
    """`x` as a traced tensor of the trace that the tensors in `trees` belong to."""
    if isinstance(x, Sym):
        return x
    syms = [v for v in flatten(trees)[0] if isinstance(v, Sym)]
    if not syms:
        raise ShapeError("expected traced inputs or parameters (call inside jit, or via apply)")
    return P.lift(P.builder_of(*syms), x)[0]
