"""Checkpoints (`nn.save` / `nn.load`): any pytree `jit` accepts, in an .npz file, without pickle.

    >>> nn.save("ckpt.npz", {"params": params, "opt": state, "epoch": 3})
    >>> nn.load("ckpt.npz")            # the same pytree back, bit for bit
    >>> nn.load("p.npz", like=model)   # checked against a template: names, shapes, dtypes

Every leaf is one .npy entry, named by its torch-style dotted path ("0.weight"), so `np.load`
and torch users see plain arrays. One JSON entry, `nnjit-tree.json`, records the tree itself,
which is what lets `load` rebuild it with no template (NOTE: never pickle, never eval, never an
import: a checkpoint is data, and loading one must not run code from it):

    {"format": "nnjit-checkpoint", "version": 1, "tree": NODE}
    NODE  {"kind": "array" | "numpy" | "int" | "float" | "bool", "entry": NAME}
              (a numpy array, a numpy scalar, or a Python int/float/bool; NAME is the entry's
               name without ".npy", and the Python leaves are 0-d int64/float64/bool entries)
          {"kind": "none"}
          {"kind": "list" | "tuple", "items": [NODE, ...]}
          {"kind": "dict", "keys": [KEY, ...], "items": [NODE, ...]}     (insertion order)
          {"kind": "namedtuple", "class": "module:qualname", "fields": [...], "items": [...]}
    KEY   {"str": s} | {"int": i} | {"bool": b} | {"float": "<8 bytes, hex>"} | {"none": null}
          | {"tuple": [KEY, ...]}

Files without the JSON entry (written before it existed, or by `np.savez`) still load with a
template.
"""
from __future__ import annotations

import collections
import errno
import json
import os
import secrets
import struct
import sys
import zipfile
import zlib
from typing import Any, Callable, NoReturn

import numpy as np

from ..ir import NnjitError, Sym
from .pytree import flatten_with_keys, flatten_with_paths, is_namedtuple

TREE_ENTRY = "nnjit-tree.json"
FORMAT, VERSION = "nnjit-checkpoint", 1
_NUMERIC = "biuf"           # bool, int, uint, float: the dtype kinds a checkpoint holds


class CheckpointNotFoundError(NnjitError, FileNotFoundError):
    """`nn.load` of a path that does not exist: an NnjitError, and a FileNotFoundError (errno
    ENOENT, `filename` set) for code that already catches that."""

    def __str__(self) -> str:
        return str(self.strerror)


def flatten_params(params) -> dict[str, np.ndarray]:
    """{"0.weight": array, ...}: the leaves under torch-style dotted names."""
    leaves, _ = flatten_with_paths(params)
    out = {}
    for path, x in leaves:
        a = np.asarray(x)
        if a.dtype.kind not in _NUMERIC:
            raise NnjitError(f"parameter '{path.replace('/', '.')}' is not a numeric array "
                             f"({type(x).__name__} of dtype {a.dtype})")
        out[path.replace("/", ".")] = a
    return out


# -- saving ---------------------------------------------------------------------------------------

def save(path: str | os.PathLike, tree) -> None:
    """Write `tree` (parameters, optimizer state, or any pytree `jit` accepts) to an .npz file,
    atomically: a temporary file in the same directory is renamed over `path` only once it is
    complete, so a crash mid-save leaves the previous checkpoint intact."""
    arrays: dict[str, np.ndarray] = {}
    header = {"format": FORMAT, "version": VERSION, "tree": _encode(tree, (), arrays)}
    text = json.dumps(header, allow_nan=False, separators=(",", ":"))
    path = os.fspath(path)
    # A unique sibling opened with "x" (not mkstemp, whose 0600 mode would stick to the result).
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:
            # Written entry by entry (not np.savez(**arrays)) so no key can clash with savez's
            # own keyword arguments.
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
                zf.writestr(TREE_ENTRY, text)
                for name, a in arrays.items():
                    with zf.open(name + ".npy", "w", force_zip64=True) as entry:
                        # NOTE: not np.ascontiguousarray, which turns a 0-d array into shape (1,).
                        np.lib.format.write_array(entry, a, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _dotted(keys: tuple[str, ...]) -> str:
    return ".".join(keys) or "<the whole tree>"


def _encode(tree, keys: tuple[str, ...], arrays: dict[str, np.ndarray]) -> dict:
    """The JSON node of `tree`; its leaves' arrays are added to `arrays` under fresh names."""
    if tree is None:
        return {"kind": "none"}
    if isinstance(tree, dict):          # subclasses (OrderedDict) too, as pytree flattens them
        return {"kind": "dict", "keys": [_encode_key(k, keys) for k in tree],
                "items": [_encode(v, keys + (str(k),), arrays) for k, v in tree.items()]}
    if is_namedtuple(tree):
        cls = type(tree)
        return {"kind": "namedtuple", "class": f"{cls.__module__}:{cls.__qualname__}",
                "fields": list(cls._fields),
                "items": [_encode(v, keys + (f,), arrays) for f, v in zip(cls._fields, tree)]}
    if isinstance(tree, (list, tuple)):
        return {"kind": "tuple" if isinstance(tree, tuple) else "list",
                "items": [_encode(v, keys + (str(i),), arrays) for i, v in enumerate(tree)]}
    kind, a = _leaf_array(tree, keys)
    name = ".".join(keys) or "value"
    n = 1
    while name in arrays:               # "a.b" from {"a.b": x} and from {"a": {"b": y}}
        name, n = f"{'.'.join(keys) or 'value'}~{n}", n + 1
    arrays[name] = a
    return {"kind": kind, "entry": name}


def _leaf_array(x, keys: tuple[str, ...]) -> tuple[str, np.ndarray]:
    """(kind, array) of one leaf, in the order that matters: numpy scalars before Python floats
    (np.float64 is a float), bools before ints (True is an int)."""
    where = _dotted(keys)
    if isinstance(x, Sym):
        raise NnjitError(f"nn.save: '{where}' is a traced tensor; save the arrays a jitted "
                         "function returns, not values inside its trace")
    if isinstance(x, np.generic):
        kind, a = "numpy", np.asarray(x)
    elif isinstance(x, bool):
        kind, a = "bool", np.asarray(x, np.bool_)
    elif isinstance(x, int):
        if not -2**63 <= x < 2**63:
            raise NnjitError(f"nn.save: '{where}' is the Python int {x}, outside int64 (jit "
                             "could not take it either)")
        kind, a = "int", np.asarray(x, np.int64)
    elif isinstance(x, float):
        kind, a = "float", np.asarray(x, np.float64)
    elif hasattr(x, "shape") and hasattr(x, "dtype"):
        kind, a = "array", np.asarray(x)   # GPU arrays are saved as (and load as) host copies
    else:
        raise NnjitError(f"nn.save: '{where}' is a {type(x).__name__}, not a numeric array "
                         "(checkpoints hold arrays, numbers and dicts/lists/tuples of them)")
    if a.dtype.kind not in _NUMERIC:
        raise NnjitError(f"nn.save: '{where}' is not a numeric array ({type(x).__name__} of "
                         f"dtype {a.dtype}; checkpoints hold bool, int and float arrays)")
    return kind, a


def _float_hex(v: float) -> str:
    return struct.pack("<d", v).hex()       # every bit, -0.0 and NaN payloads included


def _encode_key(k, keys: tuple[str, ...]) -> dict:
    if isinstance(k, str):
        return {"str": k}
    if isinstance(k, bool):
        return {"bool": k}
    if isinstance(k, int):
        return {"int": k}
    if isinstance(k, float):
        return {"float": _float_hex(k)}
    if k is None:
        return {"none": None}
    if isinstance(k, tuple) and not is_namedtuple(k):
        return {"tuple": [_encode_key(e, keys) for e in k]}
    raise NnjitError(f"nn.save: dict key {k!r} under '{_dotted(keys)}' is a {type(k).__name__}; "
                     "checkpoint keys are str, int, bool, float, None or tuples of them")


# -- loading --------------------------------------------------------------------------------------

def load(path: str | os.PathLike, like=None, dtype=None):
    """The pytree saved at `path`.

    Without `like` it is rebuilt exactly as saved: containers, dict keys, and leaves with their
    dtypes, shapes and Python types. With `like` (a pytree, or a Module whose
    `init(dtype=dtype or float32)` gives the expected names, shapes and dtypes) the result has
    like's structure and every leaf is checked against it; an NnjitError lists every missing
    or unexpected key and every shape/dtype mismatch. Files with no tree entry need `like`.

    A file that is missing raises CheckpointNotFoundError (an NnjitError and a
    FileNotFoundError); one that is not an nnjit/npz checkpoint (empty, truncated, text, a
    single .npy, a pickle) raises one NnjitError naming the file and what is wrong with it."""
    path = os.fspath(path)
    entries, header = _read(path)
    tree = stand_ins = None
    if header is not None:
        dec = _Decoder(path, entries)
        tree = dec.node(_header_tree(path, header))
        unused = sorted(set(entries) - dec.used)
        if unused:
            raise _unreadable(path, "entries " + ", ".join(map(repr, unused)) +
                              f" are not in its tree ({TREE_ENTRY})")
        stand_ins = dec.stand_ins
    if like is None:
        if header is None:
            raise NnjitError(f"nn.load({path!r}): the file has no {TREE_ENTRY} entry (it was "
                             "written by an older nnjit or by np.savez), so its tree is unknown: "
                             "pass like= (a params pytree or a Module) to load it")
        if stand_ins:
            raise NnjitError(f"nn.load({path!r}): the checkpoint holds {stand_ins[0]}, which is "
                             "not defined in any imported module; import it first, or pass "
                             "like= a pytree with that namedtuple")
        return tree
    module = _is_module(like)
    if dtype is not None and not module:
        raise NnjitError(f"nn.load({path!r}): dtype= applies only when like= is a Module (a "
                         "pytree template already has its dtypes)")
    template = like.init(0, dtype or np.float32) if module else like
    if header is None:
        return _match_flat(path, entries, template)
    return _match_tree(path, tree, template)


def _unreadable(path: str, why: str) -> NnjitError:
    return NnjitError(f"nn.load: cannot read {path!r}: {why}")


def _sniff(head: bytes) -> str:
    """What a file that is not a zip archive seems to be, from its first bytes."""
    if head.startswith(b"\x93NUMPY"):
        return ("it is a single .npy array (np.save), not an .npz checkpoint; read it with "
                "np.load, and write checkpoints with nn.save")
    if head[:1] == b"\x80":
        return ("it looks like a pickle (pickle.dump or an old torch.save); nn.load reads .npz "
                "checkpoints only and never unpickles")
    return f"it is not an .npz checkpoint (a zip of .npy arrays): it starts with {head!r}"


def _read(path: str) -> tuple[dict[str, np.ndarray], Any]:
    """({entry name without .npy: array}, parsed JSON header or None) of the file at `path`."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointNotFoundError(errno.ENOENT, f"nn.load: cannot read {path!r}: No such "
                                      "file or directory",
                                      path) from None
    except IsADirectoryError:
        raise _unreadable(path, "it is a directory") from None
    except OSError as e:
        raise _unreadable(path, e.strerror or str(e)) from None
    with f:
        head = f.read(16)
        if not head:
            raise _unreadable(path, "the file is empty (0 bytes)")
        if not head.startswith(b"PK"):
            raise _unreadable(path, _sniff(head))
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise _unreadable(path, "it starts like a zip archive but is truncated or corrupt "
                              f"({type(e).__name__}: {e})") from None
        with zf:
            return _read_entries(path, zf)


def _read_entries(path: str, zf: zipfile.ZipFile) -> tuple[dict[str, np.ndarray], Any]:
    entries: dict[str, np.ndarray] = {}
    header = None
    for name in zf.namelist():
        if name != TREE_ENTRY and not name.endswith(".npy"):
            torch = " (this looks like a torch.save file)" if name.endswith(".pkl") else ""
            raise _unreadable(path, f"entry {name!r} is not an .npy array{torch}; nn.load "
                              "reads .npz checkpoints only and never unpickles")
        try:
            with zf.open(name) as entry:
                if name == TREE_ENTRY:
                    header = _parse_header(path, entry.read())
                else:
                    entries[name[:-4]] = _read_array(path, name, entry)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError,
                RuntimeError) as e:    # bad CRC, cut-off data, unknown compression, encrypted
            raise _unreadable(path, f"entry {name!r} is corrupt ({type(e).__name__}: {e})"
                              ) from None
    return entries, header


def _read_array(path: str, name: str, entry) -> np.ndarray:
    try:
        a = np.lib.format.read_array(entry, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise _unreadable(path, f"entry {name!r} holds Python objects (a pickled object "
                              "array), and nn.load never unpickles") from None
        raise _unreadable(path, f"entry {name!r} is not a valid .npy array ({e})") from None
    if a.dtype.kind not in _NUMERIC:
        raise _unreadable(path, f"entry {name!r} has dtype {a.dtype}, not a number")
    return a


def _parse_header(path: str, data: bytes):
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _unreadable(path, f"its {TREE_ENTRY} entry is not valid JSON ({e})") from None


def _header_tree(path: str, header) -> Any:
    if not isinstance(header, dict) or header.get("format") != FORMAT or "tree" not in header:
        raise _unreadable(path, f"its {TREE_ENTRY} entry is not an nnjit checkpoint header")
    if header.get("version") != VERSION:
        raise _unreadable(path, f"it is checkpoint format version {header.get('version')!r}; "
                          f"this nnjit reads version {VERSION} (written by a newer nnjit?)")
    return header["tree"]


class _Decoder:
    """Rebuilds the pytree from the JSON tree and the arrays, checking every node, since the
    file may have been edited or damaged: malformed input is an NnjitError, never a KeyError."""

    _LEAF_TYPES = {"int": (np.int64, int), "float": (np.float64, float), "bool": (np.bool_, bool)}

    def __init__(self, path: str, entries: dict[str, np.ndarray]):
        self.path, self.entries = path, entries
        self.used: set[str] = set()
        self.stand_ins: list[str] = []   # namedtuple classes not found (see _namedtuple)

    def fail(self, why: str) -> NoReturn:
        raise _unreadable(self.path, f"its {TREE_ENTRY} entry is malformed: {why}")

    def node(self, n) -> Any:
        if not isinstance(n, dict) or not isinstance(n.get("kind"), str):
            self.fail(f"expected a node object, got {str(n)[:60]}")
        kind = n["kind"]
        if kind == "none":
            return None
        if kind in ("array", "numpy", "int", "float", "bool"):
            return self.leaf(kind, n.get("entry"))
        if kind not in ("list", "tuple", "dict", "namedtuple"):
            self.fail(f"unknown node kind {kind!r}")
        items = n.get("items")
        if not isinstance(items, list):
            self.fail(f"a {kind} node without an items list")
        kids = [self.node(c) for c in items]
        if kind == "list":
            return kids
        if kind == "tuple":
            return tuple(kids)
        if kind == "dict":
            keys = n.get("keys")
            if not isinstance(keys, list) or len(keys) != len(kids):
                self.fail("a dict node whose keys do not match its items")
            return dict(zip([self.key(k) for k in keys], kids))
        return self.namedtuple(n.get("class"), n.get("fields"), kids)

    def leaf(self, kind: str, name) -> Any:
        if not isinstance(name, str) or name not in self.entries:
            self.fail(f"a leaf refers to entry {name!r}, which the file does not have")
        self.used.add(name)
        a = self.entries[name]
        if kind == "array":
            return a
        if a.shape != ():
            self.fail(f"the {kind} leaf {name!r} has shape {a.shape}, not ()")
        if kind == "numpy":
            return a[()]
        np_type, py_type = self._LEAF_TYPES[kind]
        if a.dtype != np_type:
            self.fail(f"the {kind} leaf {name!r} has dtype {a.dtype}")
        return py_type(a[()])

    def key(self, k) -> Any:
        if not isinstance(k, dict) or len(k) != 1:
            self.fail(f"bad dict key {str(k)[:60]}")
        (tag, v), = k.items()
        checks = {"str": str, "int": int, "bool": bool, "float": str, "tuple": list}
        if tag == "none" and v is None:
            return None
        if tag not in checks or not isinstance(v, checks[tag]) or (
                tag == "int" and isinstance(v, bool)):
            self.fail(f"bad dict key {str(k)[:60]}")
        if tag == "float":
            try:
                return struct.unpack("<d", bytes.fromhex(v))[0]
            except (ValueError, struct.error):
                self.fail(f"bad float dict key {v!r}")
        return tuple(self.key(e) for e in v) if tag == "tuple" else v

    def namedtuple(self, qualified, fields, kids: list) -> tuple:
        """The saved namedtuple class if a module already imported defines it with the same
        fields. NOTE: modules are looked up in sys.modules, never imported, so that a file
        cannot make nnjit run code. Otherwise a stand-in namedtuple with the same fields:
        with a template its class comes from the template; without one, `load` refuses it."""
        if not (isinstance(qualified, str) and isinstance(fields, list)
                and all(isinstance(f, str) for f in fields) and len(fields) == len(kids)):
            self.fail("a namedtuple node without a class name and one field per item")
        module, _, qualname = qualified.partition(":")
        cls: Any = sys.modules.get(module)
        for part in qualname.split("."):
            cls = getattr(cls, part, None)
        if not (isinstance(cls, type) and issubclass(cls, tuple)
                and tuple(getattr(cls, "_fields", ())) == tuple(fields)):
            self.stand_ins.append(f"a namedtuple {module}.{qualname}{tuple(fields)}")
            try:
                cls = collections.namedtuple(qualname.rpartition(".")[2] or "Saved", fields)
            except ValueError as e:
                self.fail(f"namedtuple {qualified!r}: {e}")
        return cls(*kids)


# -- checking against a template ------------------------------------------------------------------

def _describe(x) -> str:
    """A leaf as messages name it: float32[3, 4], a numpy int64 scalar, a Python int."""
    if isinstance(x, np.generic):
        return f"a numpy {x.dtype} scalar"
    if isinstance(x, (bool, int, float)):
        return f"a Python {type(x).__name__}"
    if not (hasattr(x, "dtype") and hasattr(x, "shape")):
        return f"a {type(x).__name__}"
    return f"{np.dtype(x.dtype)}{list(x.shape)}"


def _report(path: str, missing: list[str], unexpected: list[str], problems: list[str]) -> None:
    parts = ([f"missing keys: {', '.join(missing)}"] if missing else []) + (
        [f"unexpected keys: {', '.join(unexpected)}"] if unexpected else []) + problems
    if parts:
        raise NnjitError(f"nn.load({path!r}): " + "; ".join(parts))


def _match_tree(path: str, tree, template):
    """`tree` (read from the file) restructured like `template`, every leaf checked: same
    paths, and the same shape, dtype and kind of leaf. Paths are compared as tuples of names
    ("0", "weight"), so a list in the file matches a dict keyed "0", "1", ... in the template
    (the template's containers win), but {"a.b": x} never matches {"a": {"b": x}}."""
    got = _by_path(path, flatten_with_keys(tree)[0], "the file")
    want = _by_path(path, flatten_with_keys(template)[0], "the template")
    missing = [_dotted(k) for k in want if k not in got]
    unexpected = [_dotted(k) for k in got if k not in want]
    problems = [f"'{_dotted(k)}' is {_describe(got[k])} in the file, expected {_describe(w)}"
                for k, w in want.items() if k in got and _describe(got[k]) != _describe(w)]
    _report(path, missing, unexpected, problems)
    return _rebuild(template, got.__getitem__)


def _by_path(path: str, leaves: list, where: str) -> dict:
    out = dict(leaves)
    if len(out) != len(leaves):      # only {1: x, "1": y}: both are named "1"
        seen: set = set()
        dup = next(k for k, _ in leaves if k in seen or seen.add(k))
        raise NnjitError(f"nn.load({path!r}): two leaves of {where} are both named "
                         f"'{_dotted(dup)}' (dict keys that differ only in type)")
    return out


def _match_flat(path: str, entries: dict[str, np.ndarray], template):
    """A file with no tree entry (an older nnjit's, or np.savez's): its entries are the
    template's dotted names. NOTE: the old writer saved 0-d arrays as shape (1,), so a (1,)
    entry is accepted where the template has a scalar, and leaves come back as the template's
    Python/numpy scalar types."""
    dotted = [p.replace("/", ".") for p, _ in flatten_with_paths(template)[0]]
    leaves = flatten_with_keys(template)[0]          # the same order, with tuple paths
    missing = [k for k in dotted if k not in entries]
    unexpected = [k for k in entries if k not in set(dotted)]
    problems, out = [], {}
    for k, (keys, w) in zip(dotted, leaves):
        a, wa = entries.get(k), np.asarray(w)
        if a is None:
            continue
        if a.shape == (1,) and wa.shape == ():
            a = a.reshape(())
        if a.shape != wa.shape or a.dtype != wa.dtype:
            problems.append(f"'{k}' is {a.dtype}{list(a.shape)} in the file, expected "
                            f"{wa.dtype}{list(wa.shape)}")
        elif isinstance(w, (np.generic, bool, int, float)):
            out[keys] = a[()] if isinstance(w, np.generic) else type(w)(a[()])
        else:
            out[keys] = a
    _report(path, missing, unexpected, problems)
    _by_path(path, leaves, "the template")
    return _rebuild(template, out.__getitem__)


def _rebuild(template, leaf: Callable[[tuple[str, ...]], Any], keys: tuple[str, ...] = ()):
    """`template` with `leaf(path)` at each of its leaves: its own containers, its dicts in
    their own order (pytree.unflatten would sort them), paths named as flatten_with_keys."""
    if template is None:
        return None
    if isinstance(template, dict):
        return {k: _rebuild(v, leaf, keys + (str(k),)) for k, v in template.items()}
    if is_namedtuple(template):
        return type(template)(*(_rebuild(v, leaf, keys + (f,))
                                for f, v in zip(type(template)._fields, template)))
    if isinstance(template, (list, tuple)):
        kids = [_rebuild(v, leaf, keys + (str(i),)) for i, v in enumerate(template)]
        return kids if isinstance(template, list) else tuple(kids)
    return leaf(keys)


__all__ = ["CheckpointNotFoundError", "flatten_params", "load", "save"]


def _is_module(like) -> bool:
    """An nn.Module (what makes its parameters with `init(seed, dtype)`), told apart from a
    pytree without importing nn, which imports this module."""
    return callable(getattr(like, "init", None)) and callable(getattr(like, "forward", None))
