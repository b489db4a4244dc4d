"""The transforms users call: `jit`, `grad`, `value_and_grad`, `compile`.

    >>> step = nnjit.jit(train_step, donate_argnums=(0,))
    >>> params, loss = step(params, x, y)          # traced and compiled on first call (llvm)
    >>> loss_grad = nnjit.grad(loss_fn)            # composes with jit, works on pytrees

`jit` specializes on the shapes and dtypes of its arguments. A call with a new signature traces
again; `NNJIT_LOG=recompiles` says which argument changed and how. It compiles to native CPU code
(`llvm`) unless `backend=` or `$NNJIT_BACKEND` names another ("interp": the numpy reference,
"cuda"). Modules, optimizers and `grad` called on concrete arrays, outside any `jit`, run on the
reference interpreter.
"""
from __future__ import annotations

import functools
import inspect
import os
import sys
from typing import Callable, Sequence

from .backends import resolve_backend
from .frontend.binding import BoundCall, StaticArgs
from .frontend.constants import BoundConstants, bind_constant_inputs, check_constants
from .frontend.binding import static_change as _static_change
from .frontend.eager import install as install_eager
from .frontend.pytree import (
    TreeDef,
    flatten,
    flatten_with_paths,
    leaf_labels,
    structure_change,
    unflatten,
)
from .frontend.tracing import Traced, arg_names, leaf_type, trace_flat
from .frontend.remat import checkpoint
from .frontend.vmap import vmap
from .ir import ArgumentError, Builder, NnjitError, ShapeError, Sym
from .ir.prims import builder_of, lift
from .passes.autodiff import grad as grad_pass
from .runtime.compiled import CompiledFunction, Options, compile_traced


LOG_TOPICS = ("recompiles",)
# Transforms run on concrete arrays outside `jit` (a Module called eagerly, `grad(f)(x)`) use
# the reference: nothing to compile natively for a one-off call, and its results define ours.
REFERENCE_BACKEND = "interp"


def _log_enabled(topic: str) -> bool:
    """Whether NNJIT_LOG asks for `topic`; an unknown topic is an error listing the known."""
    asked = {t.strip() for t in os.environ.get("NNJIT_LOG", "").split(",") if t.strip()}
    if unknown := sorted(asked - set(LOG_TOPICS)):
        raise NnjitError(f"NNJIT_LOG={os.environ['NNJIT_LOG']!r}: unknown topic(s) "
                         f"{', '.join(unknown)}; known: {', '.join(LOG_TOPICS)}")
    return topic in asked


def _is_tracing(args) -> bool:
    return any(isinstance(x, Sym) for x in flatten(tuple(args))[0])


def _signature(args) -> tuple[TreeDef, tuple]:
    leaves, tree = flatten_with_paths(tuple(args))
    return tree, tuple((p, leaf_type(x, p)) for p, x in leaves)


def describe_change(old: tuple, new: tuple, names: Sequence[str]) -> str:
    """Why signature `new` missed the cache entry `old`: which arguments changed and how, e.g.
    "argument params['w1'] shape changed from f32[3,4] to f32[3,5]"."""
    (old_tree, old_leaves), (new_tree, new_leaves) = old, new
    if old_tree != new_tree:
        return structure_change(old_tree, new_tree, names)
    labels = leaf_labels(new_tree, names)
    changes = []
    for label, (_, t_old), (_, t_new) in zip(labels, old_leaves, new_leaves):
        if t_old != t_new:
            what = ("shape" if t_old.dtype == t_new.dtype else
                    "dtype" if t_old.shape == t_new.shape else "shape and dtype")
            changes.append(f"argument {label} {what} changed from {t_old} to {t_new}")
    return "; ".join(changes) or "signature changed"


class JitFunction:
    """`fn` compiled per argument signature; transparent when called inside another trace.
    `backend=None` is the default backend (`$NNJIT_BACKEND`, else llvm), fixed here.

    Static arguments (`static_argnums`, `static_argnames`) are Python values baked into the
    trace: they must be hashable, they are part of the cache key, and a new value retraces.
    Every other argument, keyword arguments included, is a pytree of traced leaves.
    `constants` (see `jit`) binds fn's first argument; every position then counts from the
    second."""

    def __init__(self, fn: Callable, backend: str | None = None, fuse: bool = True,
                 donate_argnums: Sequence[int] = (), name: str | None = None,
                 static_argnums: int | Sequence[int] = (),
                 static_argnames: str | Sequence[str] = (), constants=None):
        if constants is not None:
            fn = BoundConstants(fn, check_constants(fn, constants))
        self.fn = fn
        self.backend = resolve_backend(backend)
        self.fuse = fuse
        self.donate_argnums = _check_donate_argnums(fn, donate_argnums)
        self.static = StaticArgs.of(fn, static_argnums, static_argnames)
        for i in self.donate_argnums:
            if self.static.is_static_position(i, None):
                raise ArgumentError(f"jit({_fn_label(fn)}): argument {i} is both static and "
                                    "donated; a static argument has no buffer to donate")
        self.name = name
        self._cache: dict[tuple, CompiledFunction] = {}
        self._last: CompiledFunction | None = None   # see __call__
        self.recompiles: list[str] = []
        # updated=(): copying fn.__dict__ would clobber our own fields (jit(jit(f)) shared
        # the inner cache and backend; a callable object with a `fn` attribute replaced fn).
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args, out=None, **kwargs):
        last = self._last
        if last is not None and not kwargs:
            # The usual loop: arguments exactly like the last call's (structure, plain arrays
            # of its shapes and dtypes), so the same compiled function, found without binding,
            # flattening twice or hashing the signature. Anything else (tracers included, which
            # are not arrays) takes the path below.
            flat = last.fast_leaves(args)
            if flat is not None:
                return last.run_flat(flat, out)
        if _is_tracing((args, kwargs)):
            return self.fn(*args, **kwargs)
        call = self.static.split(args, kwargs)
        cf = self._compiled(call)
        self._last = cf if not (kwargs or self.static.nums or self.static.names) else None
        return cf(*call.dynamic, out=out)

    def _compiled(self, call: BoundCall) -> CompiledFunction:
        sig = _signature(call.dynamic)
        key = (call.static_key, sig[0], tuple(t for _, t in sig[1]))
        cf = self._cache.get(key)
        if cf is None:
            if self._cache:
                why = self._why_recompile(call, sig)
                self.recompiles.append(why)
                if _log_enabled("recompiles"):
                    print(f"nnjit: recompiling {self.__name__}: {why}", file=sys.stderr)
            cf = self._lower_call(call)
            cf._sig = sig
            cf._static = call.static_key
            self._cache[key] = cf
        return cf

    def _why_recompile(self, call: BoundCall, sig: tuple) -> str:
        same_static = [cf for cf in self._cache.values() if cf._static == call.static_key]
        if not same_static:
            newest = list(self._cache.values())[-1]._static
            return _static_change(newest, call.static_key)
        return describe_change(self._closest(sig, same_static), sig, call.names)

    def _closest(self, sig: tuple, cached: Sequence[CompiledFunction]) -> tuple:
        """The cached signature `sig` differs least from (the newest one on a tie), so the
        recompile message names only what really changed."""
        def distance(old: tuple) -> tuple:
            if old[0] != sig[0]:
                a, b = old[0].children, sig[0].children
                return (1, abs(len(a) - len(b)) + sum(
                    (x != y) + abs(x.num_leaves - y.num_leaves) for x, y in zip(a, b)))
            return (0, sum((a.shape != b.shape) + (a.dtype != b.dtype)
                           for (_, a), (_, b) in zip(old[1], sig[1])))

        sigs = [cf._sig for cf in cached]
        return min(reversed(sigs), key=distance)

    def trace(self, *args, **kwargs) -> Traced:
        return self._trace_call(self.static.split(args, kwargs))

    def _trace_call(self, call: BoundCall) -> Traced:
        if not isinstance(self.fn, BoundConstants):
            return trace_flat(call.traceable, call.dynamic, self.name)
        # Traced with the constants as arguments (so exactly as the unbound function is), then
        # those inputs become const nodes.
        bound = self.fn

        def with_constants(consts, *dynamic):
            with bound.tracing_with(consts):
                return call.traceable(*dynamic)

        first = getattr(bound, "first_name", "constants")
        with_constants.__name__ = bound.__name__
        with_constants.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY)
             for n in (first, *call.names)])
        traced = trace_flat(with_constants, (bound.values, *call.dynamic), self.name)
        values = flatten((bound.values,))[0]
        in_tree = flatten_with_paths(tuple(call.dynamic))[1]
        return bind_constant_inputs(traced, len(values), values, in_tree, traced.arg_names[1:])

    def lower(self, *args, **kwargs) -> CompiledFunction:
        """Trace and compile for the signature of `args` (without running)."""
        return self._lower_call(self.static.split(args, kwargs))

    def _lower_call(self, call: BoundCall) -> CompiledFunction:
        traced = self._trace_call(call)
        n = call.n_positional
        for i in self.donate_argnums:
            if not -n <= i < n:
                raise ArgumentError(_argnum_range(self.fn, i, n, "was called with"))
            if i % n not in call.dynamic_index:
                raise ArgumentError(f"jit({_fn_label(self.fn)}): argument {i} is both static "
                                    "and donated; a static argument has no buffer to donate")
        donate = _donated_leaves(traced, {call.dynamic_index[i % n] for i in self.donate_argnums})
        return compile_traced(traced, Options(self.backend, self.fuse, donate))

    def clear_cache(self) -> None:
        self._cache.clear()
        self._last = None


def _fn_label(fn: Callable) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _positional_names(fn: Callable) -> list[str] | None:
    """The names of fn's positional parameters, or None when their number is unbounded (*args)
    or unknown (no signature)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _check_donate_argnums(fn: Callable, argnums) -> tuple[int, ...]:
    """`donate_argnums` as a tuple of ints, checked against fn's signature where it has a fixed
    number of positional parameters (otherwise at each call, by `_donated_leaves`): an index
    out of range would otherwise donate nothing, silently."""
    if argnums is None:
        return ()
    try:
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    except TypeError:
        nums = (argnums,)      # not iterable: reported as a non-int position below
    for i in nums:
        if not isinstance(i, int) or isinstance(i, bool):
            raise ArgumentError(f"jit({_fn_label(fn)}): donate_argnums must be argument "
                                f"positions (ints), got {i!r} in {argnums!r}")
    names = _positional_names(fn)
    if names is not None:
        for i in nums:
            if not -len(names) <= i < len(names):
                raise ArgumentError(_argnum_range(fn, i, len(names), "takes", names))
    return nums


def _argnum_range(fn: Callable, i: int, n: int, verb: str, names: Sequence[str] = ()) -> str:
    listed = f" ({', '.join(names)})" if names else ""
    valid = f"valid positions are {-n}..{n - 1}" if n else "so none can be donated"
    return (f"jit({_fn_label(fn)}): donate_argnums has {i}, but {_fn_label(fn)} {verb} {n} "
            f"positional argument{'s' if n != 1 else ''}{listed}; {valid}")


def _donated_leaves(traced: Traced, wanted: set[int]) -> tuple[int, ...]:
    """Flat input indices belonging to the donated (dynamic) arguments `wanted`."""
    out, start = [], 0
    for i, sub in enumerate(traced.in_tree.children):
        n = sub.num_leaves
        if i in wanted:
            out.extend(range(start, start + n))
        start += n
    return tuple(out)


def jit(fn: Callable | None = None, *, backend: str | None = None, fuse: bool = True,
        donate_argnums: Sequence[int] = (), name: str | None = None,
        static_argnums: int | Sequence[int] = (), static_argnames: str | Sequence[str] = (),
        constants=None):
    """Compile `fn` on first call for each argument signature. Usable as `@jit` or
    `@jit(backend="interp")`. `backend`: "llvm" (native CPU code, the default), "interp" (the
    numpy reference) or "cuda"; None means `$NNJIT_BACKEND` if set, else llvm.
    `donate_argnums`: positions (negative ones count from the end) of the arguments whose buffers
    the compiled code may overwrite (their arrays must not be used after the call); a position
    fn cannot have is an ArgumentError.

    `static_argnums` / `static_argnames`: arguments passed as Python values (a layer count, an
    activation name, a flag): hashable, part of the cache key, and a new value compiles again.
    Keyword arguments that are not static are traced like positional ones:

        >>> f = nnjit.jit(lambda x, act, scale: act_fn[act](x) * scale, static_argnames="act")
        >>> f(x, act="relu", scale=2.0); f(x, act="tanh", scale=3.0)   # two compilations

    `constants`: a pytree of arrays (inference weights) passed as fn's first argument and
    compiled in as constants; the jitted function takes the other arguments, and
    `donate_argnums` / `static_argnums` count them from there. The arrays are copied when
    `jit` is called. As constants, weights are folded into the code, transposed once, and
    packed once into the GEMM's panel layout (the llvm backend), instead of on every call.
    Results equal passing them as an argument. A leaf that is not an array or a number is
    an ArgumentError; one the function cannot use is the function's own error, at trace time:

        >>> infer = nnjit.jit(model.apply, constants=params)
        >>> logits = infer(x)                              # model.apply(params, x)
    """
    def make(f):
        return JitFunction(f, backend, fuse, donate_argnums, name, static_argnums,
                           static_argnames, constants)
    return make if fn is None else make(fn)


def compile(fn: Callable, *example_args, backend: str | None = None,  # noqa: A001
            fuse: bool = True, donate_argnums: Sequence[int] = (),
            static_argnums: int | Sequence[int] = (), static_argnames: str | Sequence[str] = (),
            constants=None, **example_kwargs) -> CompiledFunction:
    """Trace and compile `fn` for arguments shaped like `example_args` (`backend` and
    `constants` as in `jit`; the compiled function takes the dynamic arguments only,
    positional ones then keyword ones sorted by name)."""
    jf = JitFunction(fn, backend, fuse, donate_argnums, None, static_argnums, static_argnames,
                     constants)
    return jf.lower(*example_args, **example_kwargs)


# -- differentiation ------------------------------------------------------------------------------

def value_and_grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False):
    """`fn`'s value and its gradient w.r.t. the arguments `argnums` (pytrees welcome).

    Returns `(value, grads)`, or `((value, aux), grads)` with `has_aux=True` where fn returns
    `(loss, aux)`. Inside `jit` the gradient graph is built inline (one compiled step); called
    on concrete arrays it is compiled and run with the reference backend."""
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)

    def traced_vg(*args, **kwargs):
        b = builder_of(*[x for x in flatten((args, kwargs))[0] if isinstance(x, Sym)])
        args = [_lift_tree(b, a) for a in args]
        kwargs = _lift_tree(b, kwargs)     # keyword arguments: traced, never differentiated
        for i in nums:
            if i >= len(args):
                raise ShapeError(f"grad: argnums {nums} out of range for {len(args)} arguments")
        leaves, tree = flatten_with_paths(tuple(args))
        labels = leaf_labels(tree, arg_names(fn, len(args)))
        starts = [0]                      # flat index of each argument's first leaf
        for sub in tree.children:
            starts.append(starts[-1] + sub.num_leaves)
        wrt = [k for i in nums for k in range(starts[i], starts[i + 1])]
        for k in wrt:
            x = leaves[k][1]
            if not x.dtype.is_float:
                raise ShapeError(f"grad: cannot differentiate {getattr(fn, '__name__', 'fn')} "
                                 f"with respect to argument {labels[k]} of type {x.type}: only "
                                 "float arguments have gradients (leave it out of argnums)")

        def body(*a):
            out = fn(*a[:-1], **a[-1])
            if has_aux:
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise ShapeError("grad(has_aux=True): fn must return (loss, aux)")
                loss, aux = out
            else:
                loss, aux = out, None
            return (loss, aux)

        traced = trace_flat(body, args + [kwargs], getattr(fn, "__name__", "loss"), parent=b)
        graph = traced.graph
        loss_t = graph.outputs[0].type
        if loss_t.shape != () or not loss_t.dtype.is_float:
            raise ShapeError(f"grad: {getattr(fn, '__name__', 'fn')} must return a float scalar, "
                             f"got {loss_t}")
        gg = grad_pass(graph, wrt, remat=traced.remat)
        captured = list(traced.captures)
        flat_args = flatten(tuple(args) + (kwargs,))[0]
        outs = b.inline(gg, flat_args + captured)
        n_out = len(graph.outputs)
        value_tree = unflatten(traced.out_tree, outs[:n_out])
        grads_flat = outs[n_out:]
        grads, k = [], 0
        for i in nums:
            n = tree.children[i].num_leaves
            grads.append(unflatten(tree.children[i], grads_flat[k:k + n]))
            k += n
        loss, aux = value_tree
        value = (loss, aux) if has_aux else loss
        return value, (grads[0] if single else tuple(grads))

    @functools.wraps(fn)
    def vg(*args, **kwargs):
        if _is_tracing((args, kwargs)):
            return traced_vg(*args, **kwargs)
        return _eager(vg, traced_vg)(*args, **kwargs)

    return vg


def grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False):
    """The gradient of scalar-valued `fn` w.r.t. `argnums` (see `value_and_grad`)."""
    vg = value_and_grad(fn, argnums, has_aux)

    @functools.wraps(fn)
    def g(*args, **kwargs):
        value, grads = vg(*args, **kwargs)
        return (grads, value[1]) if has_aux else grads

    return g


def _eager(owner, traced_fn) -> JitFunction:
    """A jit of `traced_fn` cached on `owner`, for transforms called on concrete arrays."""
    jf = getattr(owner, "_nnjit_eager", None)
    if jf is None:
        name = getattr(owner, "__name__", None)
        jf = JitFunction(traced_fn, backend=REFERENCE_BACKEND, name=name)
        owner._nnjit_eager = jf
    return jf


def _lift_tree(b: Builder, tree):
    leaves, td = flatten(tree)
    return unflatten(td, [x if isinstance(x, Sym) else lift(b, x)[0] for x in leaves])


__all__ = ["CompiledFunction", "JitFunction", "NnjitError", "checkpoint", "compile", "grad",
           "jit", "value_and_grad", "vmap"]


# Modules and optimizers called on concrete arrays compile through jit (see frontend/eager.py).
install_eager(lambda fn, name: JitFunction(fn, backend=REFERENCE_BACKEND, name=name))
