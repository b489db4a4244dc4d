"""Pytrees: nested dicts, lists, tuples (and namedtuples) of leaves, flattened in a fixed order.

Dict keys are visited sorted, as in JAX, so a parameter dict flattens the same way however it
was built. Leaves are anything else (arrays, traced tensors, Python numbers); `None` is an
empty subtree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class TreeDef:
    kind: str                      # "leaf", "none", "tuple", "list", "dict" or "namedtuple"
    meta: Any = None               # dict keys, or the namedtuple class
    children: tuple["TreeDef", ...] = ()

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)

    def __str__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = ", ".join(map(str, self.children))
        if self.kind == "dict":
            inner = ", ".join(f"{k!r}: {c}" for k, c in zip(self.meta, self.children))
            return "{" + inner + "}"
        if self.kind == "list":
            return "[" + inner + "]"
        return "(" + inner + ("," if len(self.children) == 1 else "") + ")"


LEAF = TreeDef("leaf")


def _is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _children(tree) -> tuple[str, Any, list, list[str]] | None:
    """(kind, meta, children, child path names) of a container node, or None for a leaf."""
    if tree is None:
        return "none", None, [], []
    if isinstance(tree, dict):
        keys = sorted(tree, key=lambda k: (str(type(k)), k))
        return "dict", tuple(keys), [tree[k] for k in keys], [str(k) for k in keys]
    if _is_namedtuple(tree):
        return "namedtuple", type(tree), list(tree), list(type(tree)._fields)
    if isinstance(tree, (tuple, list)):
        kind = "tuple" if isinstance(tree, tuple) else "list"
        return kind, None, list(tree), [str(i) for i in range(len(tree))]
    return None


def flatten(tree) -> tuple[list, TreeDef]:
    """(leaves, treedef) of `tree`."""
    leaves: list = []

    def go(t) -> TreeDef:
        c = _children(t)
        if c is None:
            leaves.append(t)
            return LEAF
        kind, meta, kids, _ = c
        return TreeDef(kind, meta, tuple(go(k) for k in kids))

    return leaves, go(tree)


def flatten_with_paths(tree, prefix: str = "") -> tuple[list[tuple[str, Any]], TreeDef]:
    """Like `flatten`, with each leaf's path ("params/w1", "0/1")."""
    out: list[tuple[str, Any]] = []

    def go(t, path: str) -> TreeDef:
        c = _children(t)
        if c is None:
            out.append((path, t))
            return LEAF
        kind, meta, kids, names = c
        return TreeDef(kind, meta, tuple(go(k, f"{path}/{n}" if path else n)
                                         for k, n in zip(kids, names)))

    treedef = go(tree, prefix)
    return out, treedef


def unflatten(treedef: TreeDef, leaves) -> Any:
    it = iter(leaves)

    def go(td: TreeDef):
        if td.kind == "leaf":
            return next(it)
        if td.kind == "none":
            return None
        kids = [go(c) for c in td.children]
        if td.kind == "dict":
            return dict(zip(td.meta, kids))
        if td.kind == "namedtuple":
            return td.meta(*kids)
        return tuple(kids) if td.kind == "tuple" else kids

    out = go(treedef)
    rest = list(it)
    if rest:
        raise ValueError(f"{len(rest)} leaves left over unflattening {treedef}")
    return out


def tree_map(fn: Callable, tree, *rest) -> Any:
    """`fn` applied leafwise to `tree` (and to the matching leaves of `rest`)."""
    leaves, td = flatten(tree)
    others = []
    for r in rest:
        rl, rtd = flatten(r)
        if rtd != td:
            raise ValueError(f"tree structures differ: {td} vs {rtd}")
        others.append(rl)
    return unflatten(td, [fn(*xs) for xs in zip(leaves, *others)])


def tree_leaves(tree) -> list:
    return flatten(tree)[0]
