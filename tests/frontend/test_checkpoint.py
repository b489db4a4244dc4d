"""nn.save / nn.load: every pytree jit accepts comes back bit for bit (also as a hypothesis
property), training resumes from a checkpoint in a fresh process with the same losses, and every
kind of unreadable file is one NnjitError naming the file."""
from __future__ import annotations

import collections
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnjit
from nnjit import NnjitError, nn, optim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
Pair = collections.namedtuple("Pair", "first second")


def assert_same_tree(got, want, where="tree"):
    """Bit-exact equality: container types, dict key order, leaf Python types, dtypes, shapes
    and bytes (so NaN payloads and -0.0 count)."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} vs {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)} vs {list(want)}"
        for k in want:
            assert_same_tree(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{where}: length {len(got)} vs {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_tree(g, w, f"{where}[{i}]")
    elif want is not None:
        if isinstance(want, (bool, int)) and not isinstance(want, np.generic):
            assert got == want, f"{where}: {got} vs {want}"
            return
        g, w = np.asarray(got), np.asarray(want)
        assert (g.dtype, g.shape) == (w.dtype, w.shape), f"{where}: {g.dtype}{g.shape} vs " \
                                                         f"{w.dtype}{w.shape}"
        assert g.tobytes() == w.tobytes(), f"{where}: bytes differ"


def _nan(bits: int, dtype) -> np.ndarray:
    """A NaN with a payload, as a 0-d array of `dtype`."""
    uint = {np.float32: np.uint32, np.float64: np.uint64, np.float16: np.uint16}[dtype]
    return np.asarray(bits, uint).view(dtype)


def _every_kind_of_leaf():
    return {
        "step": np.zeros((), np.int64),                 # Adam's counter: the original bug
        "epoch": 7, "lr": 0.1, "neg0": -0.0, "done": False, "big": 2**62,
        "np": [np.float32(1.5), np.int32(-3), np.bool_(True), np.float64(np.nan), np.uint8(255)],
        "nan": [_nan(0x7FC00123, np.float32), _nan(0x7FF0000000000ABC, np.float64),
                np.array([_nan(0xFF800001, np.float32), -np.inf], np.float32)],
        "empty": [np.zeros((0,), np.float32), np.zeros((3, 0, 2), np.int64), [], (), {}],
        "dtypes": tuple(np.arange(6).astype(d).reshape(2, 3) for d in (
            np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint16, bool)),
        "layout": [np.arange(6.0).reshape(2, 3).T, np.arange(4, dtype=">f4")],
        "pair": Pair(np.ones(2), {"x": 1}),
        "none": None,
        3: np.int64(3), (1, "a"): 2.5, 2.5: 1, None: 0, True: 1,
        "a.b": 1, "a": {"b": 2},                       # the same dotted name twice
        "": np.float32(0.0),
    }


def test_every_kind_of_leaf_and_container_round_trips(tmp_path):
    tree = _every_kind_of_leaf()
    nn.save(tmp_path / "t.npz", tree)
    assert_same_tree(nn.load(tmp_path / "t.npz"), tree)
    assert_same_tree(nn.load(tmp_path / "t.npz", like=tree), tree)   # the template path too


def test_adam_state_saves_and_loads(tmp_path):
    """The reported bug: Adam's 0-d step counter came back as int64[1]."""
    params = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).init(seed=1)
    state = optim.Adam().init(params)
    nn.save(tmp_path / "opt.npz", state)
    assert_same_tree(nn.load(tmp_path / "opt.npz"), state)
    assert_same_tree(nn.load(tmp_path / "opt.npz", like=optim.Adam().init(params)), state)


def test_leaves_are_plain_npy_entries_and_the_tree_is_json(tmp_path):
    nn.save(tmp_path / "t.npz", {"w": np.ones(2, np.float32), "n": 3, "xs": [np.zeros(())]})
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:     # readable without nnjit
        assert sorted(z.files) == ["n", "nnjit-tree.json", "w", "xs.0"]
        assert z["n"].dtype == np.int64 and z["xs.0"].shape == ()
    with zipfile.ZipFile(tmp_path / "t.npz") as z:
        header = json.loads(z.read("nnjit-tree.json"))
    assert header["format"] == "nnjit-checkpoint" and header["version"] == 1
    assert header["tree"]["kind"] == "dict"


def test_template_mismatches_are_listed(tmp_path):
    nn.save(tmp_path / "t.npz", {"w": np.ones(2, np.float32), "n": 3, "s": np.zeros((), np.int64)})
    like = {"w": np.ones(3, np.float32), "n": 3.0, "s": np.int64(0), "extra": np.ones(1)}
    with pytest.raises(NnjitError) as e:
        nn.load(tmp_path / "t.npz", like=like)
    msg = str(e.value)
    assert "missing keys: extra" in msg
    assert "'w' is float32[2] in the file, expected float32[3]" in msg
    assert "'n' is a Python int in the file, expected a Python float" in msg
    assert "'s' is int64[] in the file, expected a numpy int64 scalar" in msg


def test_template_leaves_that_are_not_arrays_and_stray_dtype(tmp_path):
    nn.save(tmp_path / "t.npz", {"w": np.ones(2, np.float32)})
    with pytest.raises(NnjitError, match="'w' is float32\\[2\\] in the file, expected a str"):
        nn.load(tmp_path / "t.npz", like={"w": "weights"})
    with pytest.raises(NnjitError, match="dtype= applies only when like= is a Module"):
        nn.load(tmp_path / "t.npz", like={"w": np.ones(2, np.float32)}, dtype=np.float64)


def test_template_gives_the_structure(tmp_path):
    """With like=, like's containers win: a Sequential's dict of "0", "1" matches a list."""
    nn.save(tmp_path / "t.npz", [np.ones(2), np.zeros(3)])
    got = nn.load(tmp_path / "t.npz", like={"0": np.ones(2), "1": np.ones(3)})
    assert list(got) == ["0", "1"] and got["1"].shape == (3,)
    nn.save(tmp_path / "d.npz", {"a.b": np.ones(2)})
    with pytest.raises(NnjitError, match=r"missing keys: a\.b; unexpected keys: a\.b"):
        nn.load(tmp_path / "d.npz", like={"a": {"b": np.ones(2)}})     # not the same path


def _write_old_format(path, flat: dict):
    """A file as nnjit wrote them before the tree entry (0-d arrays stored as shape (1,))."""
    with zipfile.ZipFile(path, "w") as zf:
        for k, a in flat.items():
            with zf.open(k + ".npy", "w") as entry:
                np.lib.format.write_array(entry, np.ascontiguousarray(a), allow_pickle=False)


def test_old_files_load_with_a_template(tmp_path):
    weight = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    _write_old_format(tmp_path / "old.npz", {"0.weight": weight, "step": np.asarray(4, np.int64),
                                             "count": 2, "scale": 0.5})
    like = {"0": {"weight": np.zeros((2, 3), np.float32)}, "step": np.zeros((), np.int64),
            "count": 0, "scale": 0.0}
    got = nn.load(tmp_path / "old.npz", like=like)
    assert got["step"].shape == () and got["step"] == 4     # stored as (1,) by the old writer
    assert type(got["count"]) is int and got["count"] == 2
    assert type(got["scale"]) is float and got["scale"] == 0.5
    np.testing.assert_array_equal(got["0"]["weight"], weight)
    with pytest.raises(NnjitError, match=r"'scale' is float64\[\] in the file, expected "
                                         r"float32\[\]"):
        nn.load(tmp_path / "old.npz", like={**like, "scale": np.float32(0)})
    np.savez(tmp_path / "np.npz", w=np.ones(2))                    # np.savez files too
    assert nn.load(tmp_path / "np.npz", like={"w": np.zeros(2)})["w"].sum() == 2
    with pytest.raises(NnjitError, match="no nnjit-tree.json entry.*pass like="):
        nn.load(tmp_path / "np.npz")


def test_namedtuples_come_back_as_their_class_or_need_a_template(tmp_path):
    nn.save(tmp_path / "t.npz", Pair(np.ones(2), 3))
    got = nn.load(tmp_path / "t.npz")
    assert type(got) is Pair and got.second == 3

    Local = collections.namedtuple("Local", "a")
    nn.save(tmp_path / "l.npz", {"s": Local(np.ones(1))})
    with pytest.raises(NnjitError, match=r"namedtuple .*Local\('a',\).*import it first, or "
                                         "pass like="):
        nn.load(tmp_path / "l.npz")
    assert type(nn.load(tmp_path / "l.npz", like={"s": Local(np.zeros(1))})["s"]) is Local


@pytest.mark.parametrize("tree, message", [
    ({"s": np.array(["x"])}, r"'s' is not a numeric array \(ndarray of dtype <U1"),
    ({"s": "text"}, "'s' is a str, not a numeric array"),
    ({"c": np.ones(2, np.complex64)}, "'c' is not a numeric array"),
    ({"n": 2**70}, "'n' is the Python int 1180591620717411303424, outside int64"),
    ({frozenset(): 1}, r"dict key frozenset\(\) under '<the whole tree>' is a frozenset"),
])
def test_save_refuses_what_it_cannot_store(tmp_path, tree, message):
    with pytest.raises(NnjitError, match=message):
        nn.save(tmp_path / "t.npz", tree)
    assert os.listdir(tmp_path) == []                 # nothing written, not even a temporary


def test_save_refuses_traced_tensors(tmp_path):
    def f(x):
        nn.save(tmp_path / "t.npz", {"x": x})
        return x
    with pytest.raises(NnjitError, match="'x' is a traced tensor"):
        nnjit.jit(f)(np.ones(2, np.float32))


# -- random pytrees ---------------------------------------------------------------------------

_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.uint64]


@st.composite
def _raw_array(draw):
    """An array of any bit pattern (so NaNs with payloads, -0.0, infs), 0-d and size 0 too."""
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    size = int(np.prod(shape))
    raw = draw(st.binary(min_size=size * dtype.itemsize, max_size=size * dtype.itemsize))
    return np.frombuffer(raw, dtype).reshape(shape).copy()


_bits64 = st.integers(0, 2**64 - 1).map(lambda b: struct.unpack("<d", b.to_bytes(8, "little"))[0])
_leaves = st.one_of(
    _raw_array(), hnp.arrays(np.bool_, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0)),
    _raw_array().map(lambda a: a.reshape(-1)[0] if a.size else a),     # numpy scalars
    st.integers(-2**63, 2**63 - 1), st.booleans(), st.floats(), _bits64, st.none())
_keys = st.text("ab.c_", max_size=3) | st.integers(10, 12)
_trees = st.recursive(_leaves, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.lists(kids, max_size=3).map(tuple),
    st.dictionaries(_keys, kids, max_size=3), st.builds(Pair, kids, kids)), max_leaves=12)


@settings(max_examples=max(100, settings().max_examples))
@given(_trees)
def test_random_pytrees_round_trip_bit_exactly(tree):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.npz")
        nn.save(path, tree)
        assert_same_tree(nn.load(path), tree)
        assert_same_tree(nn.load(path, like=tree), tree)


# -- unreadable files -------------------------------------------------------------------------

def _checkpoint_bytes(tmp_path) -> bytes:
    nn.save(tmp_path / "good.npz", {"w": np.arange(64, dtype=np.float32), "n": 1})
    return (tmp_path / "good.npz").read_bytes()


def _edit_header(tmp_path, edit) -> bytes:
    with zipfile.ZipFile(tmp_path / "good.npz") as z:
        items = {n: z.read(n) for n in z.namelist()}
    header = json.loads(items["nnjit-tree.json"])
    items["nnjit-tree.json"] = edit(header)
    with zipfile.ZipFile(tmp_path / "edited.npz", "w") as z:
        for n, b in items.items():
            z.writestr(n, b)
    return (tmp_path / "edited.npz").read_bytes()


def _flip_a_data_byte(data: bytes) -> bytes:
    i = data.index(np.arange(64, dtype=np.float32)[40:41].tobytes())
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]


def _torch_like_zip(tmp_path) -> bytes:
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    return (tmp_path / "model.pt").read_bytes()


def _object_npz(tmp_path) -> bytes:
    np.savez(tmp_path / "obj.npz", w=np.array([{"a": 1}], dtype=object))
    return (tmp_path / "obj.npz").read_bytes()


def _npy(tmp_path) -> bytes:
    np.save(tmp_path / "a.npy", np.ones(3))
    return (tmp_path / "a.npy").read_bytes()


_BAD_FILES = {
    "empty": (lambda tp: b"", "the file is empty"),
    "text": (lambda tp: b"weights = [1, 2, 3]\n", "not an .npz checkpoint.*b'weights"),
    "npy": (_npy, r"a single \.npy array \(np\.save\), not an \.npz"),
    "pickle": (lambda tp: pickle.dumps({"w": np.ones(2)}), "looks like a pickle.*never unpickles"),
    "truncated": (lambda tp: _checkpoint_bytes(tp)[:200], "truncated or corrupt"),
    "cut at the end": (lambda tp: _checkpoint_bytes(tp)[:-30], "truncated or corrupt"),
    "bit flip": (lambda tp: _flip_a_data_byte(_checkpoint_bytes(tp)), "entry 'w.npy' is corrupt"),
    "object array": (_object_npz, "entry 'w.npy' holds Python objects.*never unpickles"),
    "torch.save": (_torch_like_zip, "'archive/data.pkl' is not an .npy array.*torch.save"),
    "bad json": (lambda tp: (_checkpoint_bytes(tp), _edit_header(tp, lambda h: b"{"))[1],
                 "nnjit-tree.json entry is not valid JSON"),
    "newer version": (lambda tp: (_checkpoint_bytes(tp), _edit_header(
        tp, lambda h: json.dumps({**h, "version": 9}).encode()))[1], "format version 9"),
    "bad node": (lambda tp: (_checkpoint_bytes(tp), _edit_header(
        tp, lambda h: json.dumps({**h, "tree": {"kind": "dict", "keys": [{"str": "w"}],
                                                "items": [{"kind": "set"}]}}).encode()))[1],
        "malformed: unknown node kind 'set'"),
    "missing entry": (lambda tp: (_checkpoint_bytes(tp), _edit_header(
        tp, lambda h: json.dumps({**h, "tree": {"kind": "array", "entry": "v"}}).encode()))[1],
        "refers to entry 'v', which the file does not have"),
}


@pytest.mark.parametrize("kind", list(_BAD_FILES))
def test_unreadable_files_are_one_clear_error(tmp_path, kind):
    make, message = _BAD_FILES[kind]
    path = tmp_path / "ckpt.npz"
    path.write_bytes(make(tmp_path))
    for like in (None, {"w": np.zeros(64, np.float32), "n": 0}):
        with pytest.raises(NnjitError, match=message) as e:
            nn.load(path, like=like)
        assert str(path) in str(e.value) and "cannot read" in str(e.value)
        assert type(e.value) is NnjitError
        # no zipfile/numpy/json exception chained behind it
        assert e.value.__cause__ is None
        assert e.value.__context__ is None or e.value.__suppress_context__


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(nn.CheckpointNotFoundError,
                       match=r"cannot read .*absent\.npz.: No such file or directory") as e:
        nn.load(tmp_path / "absent.npz")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, NnjitError)
    assert e.value.filename == str(tmp_path / "absent.npz")
    with pytest.raises(NnjitError, match="cannot read .*: it is a directory"):
        nn.load(tmp_path)


# -- resuming training in a fresh process -------------------------------------------------------

def _training():
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = optim.Adam(1e-2)

    def train_step(params, state, x, y):
        def loss_fn(p):
            return nn.cross_entropy(model.apply(p, x), y)
        loss, grads = nnjit.value_and_grad(loss_fn)(params)
        params, state = opt.update(params, grads, state)
        return params, state, loss

    step = nnjit.jit(train_step, backend="llvm", donate_argnums=(0, 1))
    return model, opt, step


def _batch(k: int):
    rng = np.random.default_rng(100 + k)
    return rng.standard_normal((8, 5)).astype(np.float32), rng.integers(0, 3, 8)


def _run(step, params, state, steps):
    losses = []
    for k in steps:
        params, state, loss = step(params, state, *_batch(k))
        losses.append(float(loss))
    return params, state, losses


def resume(directory: str) -> None:
    """Run in the fresh process: load the checkpoint, train steps 3..5, save the results."""
    model, _, step = _training()
    params = nn.load(os.path.join(directory, "params.npz"), like=model)
    state = nn.load(os.path.join(directory, "state.npz"))          # no template needed
    assert state["step"].shape == () and state["step"] == 3
    params, state, losses = _run(step, params, state, range(3, 6))
    nn.save(os.path.join(directory, "after.npz"), {"params": params, "state": state,
                                                   "losses": losses})


def test_training_resumes_in_a_fresh_process(tmp_path):
    model, opt, step = _training()
    params = model.init(seed=0)
    _, _, straight = _run(step, params, opt.init(params), range(6))     # uninterrupted

    params = model.init(seed=0)
    params, state, first = _run(step, params, opt.init(params), range(3))
    nn.save(tmp_path / "params.npz", params)
    nn.save(tmp_path / "state.npz", state)
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.frontend.test_checkpoint import resume; "
                               "resume(sys.argv[1])", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    after = nn.load(tmp_path / "after.npz")
    assert first == straight[:3]
    assert after["losses"] == straight[3:]          # the same floats, bit for bit
    assert after["state"]["step"] == 6 and straight[5] < straight[0]
