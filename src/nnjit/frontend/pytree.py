"""Pytrees: nested dicts, lists, tuples (and namedtuples) of leaves, flattened in a fixed order.

Dict keys are visited sorted, as in JAX, so a parameter dict flattens the same way however it
was built. Leaves are anything else (arrays, traced tensors, Python numbers); `None` is an
empty subtree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence


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


def is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _children(tree) -> tuple[str, Any, list, list[str]] | None:
    """(kind, meta, children, child path names) of a container node, or None for a leaf."""
    if tree is None:
        return "none", None, [], []
    if isinstance(tree, dict):
        keys = sorted(tree, key=lambda k: (str(type(k)), k))
        return "dict", tuple(keys), [tree[k] for k in keys], [str(k) for k in keys]
    if is_namedtuple(tree):
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


def flatten_with_keys(tree) -> tuple[list[tuple[tuple[str, ...], Any]], TreeDef]:
    """Like `flatten`, with each leaf's path as a tuple of names (("params", "w1"), ("0", "1")):
    unlike a joined string, ("a.b",) and ("a", "b") stay apart."""
    out: list[tuple[tuple[str, ...], Any]] = []

    def go(t, keys: tuple[str, ...]) -> TreeDef:
        c = _children(t)
        if c is None:
            out.append((keys, t))
            return LEAF
        kind, meta, kids, names = c
        return TreeDef(kind, meta, tuple(go(k, keys + (n,)) for k, n in zip(kids, names)))

    treedef = go(tree, ())
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


# -- naming leaves for messages --------------------------------------------------------------

def _arg_label(names: Sequence[str], i: int) -> str:
    return names[i] if i < len(names) else f"arg{i}"


def leaf_labels(tree: TreeDef, names: Sequence[str]) -> list[str]:
    """A Python-like path for every leaf of the argument tuple: x, params['w1'], xs[0], st.h."""
    out: list[str] = []

    def go(td: TreeDef, label: str) -> None:
        if td.kind == "leaf":
            out.append(label)
        for sub, child in zip(_child_labels(td, label), td.children):
            go(child, sub)

    for i, child in enumerate(tree.children):
        go(child, _arg_label(names, i))
    return out


def _child_labels(td: TreeDef, label: str) -> list[str]:
    if td.kind == "dict":
        return [f"{label}[{k!r}]" for k in td.meta]
    if td.kind == "namedtuple":
        return [f"{label}.{f}" for f in td.meta._fields]
    return [f"{label}[{i}]" for i in range(len(td.children))]


def _describe_tree(td: TreeDef) -> str:
    if td.kind == "leaf":
        return "an array"
    if td.kind == "namedtuple":
        return f"a {td.meta.__name__}"
    if td.kind == "none":
        return "None"
    return f"a {td.kind} of {len(td.children)}"


def structure_change(old: TreeDef, new: TreeDef, names: Sequence[str]) -> str:
    if len(old.children) != len(new.children):
        return (f"called with {len(new.children)} positional arguments, previously "
                f"{len(old.children)}")

    def go(a: TreeDef, b: TreeDef, label: str) -> str | None:
        if a == b:
            return None
        if a.kind != b.kind or (a.kind == "namedtuple" and a.meta is not b.meta):
            return f"argument {label} changed from {_describe_tree(a)} to {_describe_tree(b)}"
        if a.kind == "dict" and a.meta != b.meta:
            added = [k for k in b.meta if k not in a.meta]
            removed = [k for k in a.meta if k not in b.meta]
            parts = ([f"keys {added} added"] if added else []) + (
                [f"keys {removed} removed"] if removed else [])
            return f"argument {label} changed structure: {', '.join(parts)}"
        if len(a.children) != len(b.children):
            return (f"argument {label} length changed from {len(a.children)} to "
                    f"{len(b.children)}")
        for sub, ca, cb in zip(_child_labels(b, label), a.children, b.children):
            why = go(ca, cb, sub)
            if why:
                return why
        return None

    for i, (a, b) in enumerate(zip(old.children, new.children)):
        why = go(a, b, _arg_label(names, i))
        if why:
            return why
    return f"argument structure changed from {old} to {new}"
