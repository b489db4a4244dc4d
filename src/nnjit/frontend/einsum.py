"""numpy.einsum lowered to the existing contractions: diagonals by strided slices, labels used
once summed early, then operands contracted left to right, each pair as one batched `matmul`
(transpose + reshape to (batch, M, K) @ (batch, K, N); integer operands multiply and sum, since
matmul is float only), and a final sum and transpose into the output order. Everything is a
composite, so gradients come from the primitives' VJPs.

    >>> nnjit.einsum("bij,bjk->bik", a, b)     # a batched matmul
    >>> nnjit.einsum("ii", m)                  # the trace
    >>> nnjit.einsum("...i,i", x, w)           # x @ w over any leading dims
"""
from __future__ import annotations

import math
from typing import Any

from ..ir import DType, ShapeError, Sym, user_loc
from ..ir import prims as P

# -- movement/indexing ops (issue 12) --

Label = str | tuple   # a letter, or ("...", k) for the k-th broadcast (ellipsis) dim


def _fail(msg: str, *operands: Sym) -> ShapeError:
    shapes = ", ".join(str(o.shape) for o in operands)
    return ShapeError(f"{msg} (operand shapes: {shapes})" if operands else msg, "einsum",
                      user_loc())


def _terms(spec: str, what: str) -> list[str]:
    for c in spec.replace("...", "").replace(",", ""):
        if not c.isalpha():
            raise _fail(f"invalid character {c!r} in the {what} subscripts {spec!r} (letters, "
                        "',', '->' and '...' only)")
    return spec.split(",")


def _labels(term: str, ndim: int, n_ell: int, operands) -> list[Label]:
    """The labels of an operand (or the output) with `n_ell` broadcast dims in all: its
    ellipsis stands for its last dims beyond the letters, aligned right with the others."""
    head, dots, tail = term.partition("...")
    if "..." in tail:
        raise _fail(f"more than one ellipsis in {term!r}")
    if not dots:
        if len(term) != ndim:
            raise _fail(f"subscripts {term!r} name {len(term)} dims of a {ndim}-d operand",
                        *operands)
        return list(term)
    k = ndim - len(head) - len(tail)
    if k < 0:
        raise _fail(f"subscripts {term!r} name more dims than the {ndim}-d operand has",
                    *operands)
    return list(head) + [("...", n_ell - k + j) for j in range(k)] + list(tail)


def _diagonal(x: Sym, labels: list[Label]) -> tuple[Sym, list[Label]]:
    """A label repeated in one operand ("ii") takes the diagonal: its dims are moved last and
    merged, and a slice with step 1 + n + n^2 + ... picks the elements whose coordinates agree."""
    while True:
        dup = next((lb for lb in labels if labels.count(lb) > 1), None)
        if dup is None:
            return x, labels
        where = [d for d, lb in enumerate(labels) if lb == dup]
        sizes = {x.shape[d] for d in where}
        if len(sizes) > 1:
            raise _fail(f"label {dup!r} repeated in one operand over dims of different sizes "
                        f"{[x.shape[d] for d in where]}", x)
        (n,) = sizes
        keep = [d for d in range(x.ndim) if d not in where]
        x = P.transpose(x, keep + where)
        lead = tuple(x.shape[:len(keep)])
        x = P.reshape(x, lead + (n ** len(where),))
        step = sum(n ** j for j in range(len(where)))
        x = P.getitem(x, (slice(None),) * len(lead) + (slice(None, None, step),))
        labels = [labels[d] for d in keep] + [dup]


def _sum_labels(x: Sym, labels: list[Label], drop) -> tuple[Sym, list[Label]]:
    axes = [d for d, lb in enumerate(labels) if lb in drop]
    if not axes:
        return x, labels
    return P.reduce_sum(x, axes), [lb for lb in labels if lb not in drop]


def _contract(a: Sym, la: list[Label], b: Sym, lb: list[Label], needed) -> tuple[Sym, list]:
    """a and b contracted over their shared labels not in `needed`, as one batched matmul:
    (batch, a-only, shared) @ (batch, shared, b-only)."""
    batch = [x for x in la if x in lb and x in needed]
    summed = [x for x in la if x in lb and x not in needed]
    a_only = [x for x in la if x not in lb]
    b_only = [x for x in lb if x not in la]
    size = dict(zip(la, a.shape)) | dict(zip(lb, b.shape))

    def arrange(x, lx, order, groups):
        x = P.transpose(x, [lx.index(o) for o in order])
        return P.reshape(x, tuple(math.prod(size[o] for o in g) for g in groups))

    if not a.dtype.is_float:    # matmul is f32/f64 only: integers multiply and sum exactly
        labels = batch + a_only + b_only + summed
        prod = P.mul(_aligned(a, la, labels), _aligned(b, lb, labels))
        return _sum_labels(prod, labels, set(summed))
    lead = [batch] if batch else []    # no batch labels: a plain 2-d matmul
    a3 = arrange(a, la, batch + a_only + summed, lead + [a_only, summed])
    b3 = arrange(b, lb, batch + summed + b_only, lead + [summed, b_only])
    out = P.matmul(a3, b3)
    labels = batch + a_only + b_only
    return P.reshape(out, tuple(size[o] for o in labels)), labels


def _aligned(x: Sym, lx: list[Label], labels: list[Label]) -> Sym:
    """x with its dims in the order of `labels` (size 1 for labels it lacks), to broadcast."""
    x = P.transpose(x, [lx.index(o) for o in labels if o in lx])
    dims = iter(x.shape)
    return P.reshape(x, tuple(next(dims) if o in lx else 1 for o in labels))


def einsum(subscripts: str, *operands: Any) -> Sym:
    """numpy.einsum: implicit ("ij,jk": the output is the labels used once, in alphabetical
    order, after the broadcast dims) or explicit ("ij,jk->ki") output, repeated labels in one
    operand (diagonals, "ii" is the trace), '...' for broadcast dims, and size-1 dims that
    broadcast against the other operands as in numpy."""
    if not operands:
        raise _fail("needs at least one operand")
    b = P.builder_of(*operands)
    ops = P.lift(b, *operands)
    if ops[0].dtype == DType.BOOL:
        raise _fail("bool operands are not supported; cast them to an integer or float dtype",
                    *ops)
    spec = subscripts.replace(" ", "")
    ins, arrow, out_spec = spec.partition("->")
    terms = _terms(ins, "input")
    if len(terms) != len(ops):
        raise _fail(f"{subscripts!r} has {len(terms)} operand terms for {len(ops)} operands",
                    *ops)
    n_ell = max((x.ndim - len(t.replace("...", "")) for x, t in zip(ops, terms)
                 if "..." in t), default=0)
    labels = [_labels(t, x.ndim, n_ell, ops) for t, x in zip(terms, ops)]
    ell = [("...", k) for k in range(n_ell)]
    if arrow:
        if "," in out_spec:
            raise _fail(f"the output of {subscripts!r} must be one term")
        _terms(out_spec, "output")
        if n_ell and "..." not in out_spec:
            raise _fail(f"{subscripts!r}: the operands have broadcast dims ('...') that the "
                        "output does not name; add '...' to the output", *ops)
        out = _labels(out_spec, len(out_spec.replace("...", "")) + n_ell, n_ell, ops)
        for lab in out:
            if out.count(lab) > 1:
                raise _fail(f"output label {lab!r} appears more than once in {subscripts!r}")
            if not any(lab in ls for ls in labels):
                raise _fail(f"output label {lab!r} of {subscripts!r} is in no operand", *ops)
    else:
        letters = [lab for ls in labels for lab in ls if isinstance(lab, str)]
        out = ell + sorted(c for c in set(letters) if letters.count(c) == 1)
    # The size of each label: every operand's dim is that size or 1 (numpy broadcasting).
    size: dict = {}
    for x, ls in zip(ops, labels):
        for lab, n in zip(ls, x.shape):
            if n != 1 and size.get(lab, 1) not in (1, n):
                raise _fail(f"label {lab if isinstance(lab, str) else '...'!r} has sizes "
                            f"{size[lab]} and {n}", *ops)
            size[lab] = n if n != 1 else size.get(lab, 1)
    pending = []
    for x, ls in zip(ops, labels):
        x, ls = _diagonal(x, ls)
        want = tuple(size[lab] for lab in ls)
        pending.append((P.broadcast_to(x, want) if x.shape != want else x, ls))
    # Labels one operand alone uses and the output drops are summed before contracting.
    for i, (x, ls) in enumerate(pending):
        others = {lab for j, (_, o) in enumerate(pending) if j != i for lab in o}
        pending[i] = _sum_labels(x, ls, {lab for lab in ls if lab not in out and
                                         lab not in others})
    acc, acc_labels = pending[0]
    for k in range(1, len(pending)):
        later = {lab for _, o in pending[k + 1:] for lab in o} | set(out)
        acc, acc_labels = _contract(acc, acc_labels, *pending[k], later)
    acc, acc_labels = _sum_labels(acc, acc_labels, {lab for lab in acc_labels if lab not in out})
    return P.transpose(acc, [acc_labels.index(lab) for lab in out])
