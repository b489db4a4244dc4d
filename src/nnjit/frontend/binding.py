"""Binding a call's arguments for `jit`: static arguments (Python values baked into the trace and
part of the cache key) versus dynamic ones (pytrees of traced leaves), keyword arguments
included.

    >>> call = StaticArgs.of(f, static_argnums=(1,)).split((x, "relu"), {"scale": s})
    >>> call.dynamic, call.names, call.static_key
    ((x, s), ('x', 'scale'), (('act', <class 'str'>, 'relu'),))
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..ir import ArgumentError
from .tracing import arg_names


def _label(fn: Callable) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _parameters(fn: Callable) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class BoundCall:
    """One call split into its static part and the dynamic arguments the trace takes."""

    dynamic: tuple              # the traced arguments: positional ones, then keyword ones
    names: tuple[str, ...]      # a label per dynamic argument (its parameter name)
    static_key: tuple           # ((label, type, value), ...): hashable, part of the cache key
    traceable: Callable         # traceable(*dynamic) calls fn with the static values put back
    dynamic_index: dict         # original positional index -> index in `dynamic`
    n_positional: int


@dataclass(frozen=True)
class StaticArgs:
    fn: Callable
    nums: tuple[int, ...]
    names: frozenset[str]

    @classmethod
    def of(cls, fn: Callable, static_argnums=(), static_argnames=()) -> "StaticArgs":
        """Checked against fn's signature where it has one: a position or name fn cannot take
        is an ArgumentError. As in JAX, a static parameter is static whether it is passed by
        position or by name."""
        nums = _ints(fn, static_argnums)
        names = (static_argnames,) if isinstance(static_argnames, str) else \
            tuple(static_argnames or ())
        for n in names:
            if not isinstance(n, str):
                raise ArgumentError(f"jit({_label(fn)}): static_argnames must be parameter "
                                    f"names (str), got {n!r}")
        params = _parameters(fn)
        if params is not None:
            positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY,
                                                                p.POSITIONAL_OR_KEYWORD)]
            var_pos = any(p.kind == p.VAR_POSITIONAL for p in params)
            var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
            by_name = {p.name for p in params if p.kind != p.POSITIONAL_ONLY}
            for i in nums:
                if not var_pos and not -len(positional) <= i < len(positional):
                    raise ArgumentError(
                        f"jit({_label(fn)}): static_argnums has {i}, but {_label(fn)} takes "
                        f"{len(positional)} positional argument(s) ({', '.join(positional)})")
            for n in names:
                if n not in by_name and not var_kw:
                    raise ArgumentError(
                        f"jit({_label(fn)}): static_argnames has {n!r}, which is not a "
                        f"parameter of {_label(fn)} ({', '.join(p.name for p in params)})")
            # static by position <-> static by name
            names = names + tuple(positional[i] for i in nums if -len(positional) <= i <
                                  len(positional))
            nums = nums + tuple(positional.index(n) for n in names if n in positional)
        return cls(fn, tuple(sorted(set(nums))), frozenset(names))

    def is_static_position(self, i: int, nargs: int | None) -> bool:
        return any(i == j or (nargs is not None and i % nargs == j % nargs) for j in self.nums)

    def split(self, args: Sequence[Any], kwargs: dict) -> BoundCall:
        fn = self.fn
        if not self.nums and not self.names and not kwargs:
            return BoundCall(tuple(args), tuple(arg_names(fn, len(args))), (), fn,
                             {i: i for i in range(len(args))}, len(args))
        params = _parameters(fn)
        if params is not None:
            try:
                inspect.signature(fn).bind(*args, **kwargs)
            except TypeError as e:
                raise ArgumentError(f"jit({_label(fn)}): {e}") from None
        n = len(args)
        pos_names = arg_names(fn, n)
        static_pos = {j % n for j in self.nums if -n <= j < n}
        dynamic, names, slots, static, index = [], [], [], [], {}
        for i, a in enumerate(args):
            if i in static_pos:
                static.append((pos_names[i], a))
            else:
                index[i] = len(dynamic)
                dynamic.append(a), names.append(pos_names[i]), slots.append(i)
        static_kw = {}
        for k in sorted(kwargs):
            if k in self.names:
                static_kw[k] = kwargs[k]
                static.append((k, kwargs[k]))
            else:
                dynamic.append(kwargs[k]), names.append(k), slots.append(k)
        key = tuple((label, type(v), _hashable(fn, label, v)) for label, v in static)
        traceable = _traceable(fn, list(args), static_kw, slots, names)
        return BoundCall(tuple(dynamic), tuple(names), key, traceable, index, n)


def _ints(fn: Callable, argnums) -> tuple[int, ...]:
    if argnums is None:
        return ()
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for i in nums:
        if not isinstance(i, int) or isinstance(i, bool):
            raise ArgumentError(f"jit({_label(fn)}): static_argnums must be argument positions "
                                f"(ints), got {i!r} in {argnums!r}")
    return nums


def _hashable(fn: Callable, label: str, v: Any) -> Any:
    try:
        hash(v)
    except TypeError:
        raise ArgumentError(
            f"jit({_label(fn)}): static argument {label} must be hashable (it is part of the "
            f"cache key), got a {type(v).__name__}: pass a tuple instead of a list, or make "
            "it a traced (non-static) argument") from None
    return v


def _traceable(fn: Callable, args: list, static_kw: dict, slots: list, names: list) -> Callable:
    """fn as a function of the dynamic arguments only, with their parameter names (the graph
    inputs and the recompile messages are named after them)."""
    def call(*dynamic):
        a, kw = list(args), dict(static_kw)
        for slot, v in zip(slots, dynamic):
            if isinstance(slot, int):
                a[slot] = v
            else:
                kw[slot] = v
        return fn(*a, **kw)

    call.__name__ = call.__qualname__ = _label(fn)
    call.__signature__ = inspect.Signature(   # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY) for n in names])
    return call


def static_change(old: tuple, new: tuple) -> str:
    """Why static key `new` missed the newest cache entry `old`, e.g.
    "static argument act changed from 'relu' to 'tanh'"."""
    was = {label: v for label, _, v in old}
    now = {label: v for label, _, v in new}
    changes = [f"static argument {k} changed from {was[k]!r} to {now[k]!r}"
               for k in now if k in was and (type(was[k]), was[k]) != (type(now[k]), now[k])]
    changes += [f"static argument {k} added ({now[k]!r})" for k in now if k not in was]
    changes += [f"static argument {k} removed" for k in was if k not in now]
    return "; ".join(changes) or "static arguments changed"
