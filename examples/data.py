"""Data for the examples and the end-to-end tests, with no download: scikit-learn's bundled
digits (8x8 images of handwritten digits, 1797 samples) and text that ships with Python itself
(the docstrings of a fixed list of standard-library modules)."""
from __future__ import annotations

import importlib
import inspect
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    pixel_mean: np.ndarray | None = None   # what was subtracted from the scaled pixels (64,)


def digits(images: bool = False) -> Split:
    """The digits on the fixed 80/20 split `train_test_split(test_size=0.2, random_state=0)`.

    Pixels (0..16) are scaled to [0, 1] and centred with the training set's per-pixel mean
    (kept as `pixel_mean`, so raw pixels p map to `p / 16 - pixel_mean`).
    `images=False` gives (N, 64) float32 rows, `images=True` (N, 1, 8, 8) NCHW images; labels are
    int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.astype(np.int64), test_size=0.2,
                                              random_state=0)
    mean = x_tr.mean(axis=0, dtype=np.float64).astype(np.float32)
    x_tr, x_te = x_tr - mean, x_te - mean
    if images:
        x_tr, x_te = x_tr.reshape(-1, 1, 8, 8), x_te.reshape(-1, 1, 8, 8)
    return Split(np.ascontiguousarray(x_tr), y_tr, np.ascontiguousarray(x_te), y_te, mean)


def minibatches(x: np.ndarray, y: np.ndarray, batch: int, rng: np.random.Generator
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of shuffled batches of exactly `batch` rows (the ragged tail is dropped, so
    every step has the same shapes and the train step compiles once)."""
    perm = rng.permutation(len(x))
    for i in range(0, len(x) - batch + 1, batch):
        idx = perm[i:i + batch]
        yield x[idx], y[idx]


# -- text -----------------------------------------------------------------------------------------

STDLIB_MODULES = ("collections", "functools", "itertools", "json", "os", "re", "string",
                  "textwrap", "random", "heapq", "bisect", "argparse", "pathlib", "shutil",
                  "subprocess", "threading", "typing", "dataclasses", "enum", "fractions")


def stdlib_text(modules: tuple[str, ...] = STDLIB_MODULES, max_chars: int | None = None) -> str:
    """The docstrings of `modules` and of their public classes and functions (in name order),
    read at run time, so the text depends only on the running Python. Non-ASCII characters are
    dropped to keep the vocabulary small."""
    parts: list[str] = []
    for name in modules:
        mod = importlib.import_module(name)
        docs = [inspect.getdoc(mod)]
        with warnings.catch_warnings():       # e.g. typing.io warns when its doc is read
            warnings.simplefilter("ignore", DeprecationWarning)
            for attr in sorted(vars(mod)):
                obj = getattr(mod, attr)
                if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                    continue
                if inspect.isclass(obj) or inspect.isfunction(obj):
                    docs.append(inspect.getdoc(obj))
        parts.extend(d for d in docs if d)
    text = "\n\n".join(parts).encode("ascii", "ignore").decode("ascii")
    return text[:max_chars] if max_chars else text


@dataclass(frozen=True)
class Vocab:
    chars: str

    @staticmethod
    def of(text: str) -> "Vocab":
        return Vocab("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.chars)}
        return np.array([index[c] for c in text], np.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def unigram_entropy(ids: np.ndarray, vocab_size: int) -> float:
    """H(p) in nats/char of the character frequencies: the loss of the best model that ignores
    context, which a sequence model must beat to have learned anything."""
    p = np.bincount(ids, minlength=vocab_size) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def char_windows(ids: np.ndarray, batch: int, seq_len: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """`batch` random windows, time-major: inputs (seq_len, batch) and the next-char targets."""
    starts = rng.integers(0, len(ids) - seq_len - 1, size=batch)
    idx = starts[None, :] + np.arange(seq_len + 1)[:, None]
    win = ids[idx]
    return np.ascontiguousarray(win[:-1]), np.ascontiguousarray(win[1:])
