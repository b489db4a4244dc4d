"""What every worker shares: nested-dict trees as flat npz files, the check against the
float64 reference, and the Contender record."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Contender:
    """`call()` runs one step or forward pass and blocks until its result is ready (the timed
    unit); `fetch(raw)` turns the value of the first `call()` into numpy (a tree shaped like the
    reference) for the check. Stateful contenders (training steps, in-place chains) carry
    their state from call to call, so the first call is the one that starts from the shared
    initial data."""
    call: Callable[[], Any]
    fetch: Callable[[Any], Any] = lambda raw: raw


def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}/"))
        return out
    return {prefix.rstrip("/"): np.asarray(tree)}


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    out: dict = {}
    for key, v in flat.items():
        *path, leaf = key.split("/")
        d = out
        for p in path:
            d = d.setdefault(p, {})
        d[leaf] = v
    return out


def save(path: str, data: dict, ref) -> None:
    np.savez(path, **{f"data/{k}": v for k, v in flatten(data).items()},
             **{f"ref/{k}": v for k, v in flatten({"_": ref}).items()})


def load(path: str) -> tuple[dict, Any]:
    with np.load(path) as z:
        data = unflatten({k[5:]: z[k] for k in z.files if k.startswith("data/")})
        ref = unflatten({k[4:]: z[k] for k in z.files if k.startswith("ref/")})["_"]
    return data, ref


def torch_names(params: dict) -> dict[str, np.ndarray]:
    """nnjit's nested params as torch state-dict names ("0/weight" -> "0.weight")."""
    return {k.replace("/", "."): v for k, v in flatten(params).items()}


def from_torch_names(named) -> dict:
    return unflatten({k.replace(".", "/"): np.asarray(v) for k, v in named.items()})


#: Largest error allowed, relative to the largest magnitude of the reference leaf. float32
#: against float64: a 1024-term dot product or a 64-step BPTT stays near 1e-5.
TOL = 2e-4


def _leaf_error(got, want, slack=0.0) -> float:
    """max |got - want| beyond `slack` (elementwise), relative to max |want|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    if not want.size:
        return 0.0
    scale = float(np.max(np.abs(want)))
    return float(np.max(np.maximum(np.abs(got - want) - slack, 0.0))) / (scale or 1.0)


def disagreement(got, ref, initial=None) -> str | None:
    """None when `got` matches the float64 reference `ref`, else what differs. With `initial`
    (the parameters before a training step), parameters are compared as updates (new - old):
    the update is lr * grad, so comparing the parameters themselves would hide a wrong gradient
    under the much larger weights."""
    g, r = flatten({"_": got}), flatten({"_": ref})
    if g.keys() != r.keys():
        return f"result leaves {sorted(g)[:4]}... differ from the reference's {sorted(r)[:4]}..."
    init = flatten({"_": {"params": initial}}) if initial is not None else {}
    worst = (0.0, "")
    for k in r:
        a, b = g[k], r[k]
        slack = 0.0
        if k in init:
            # A float32 parameter holds its update only to within one unit in the last place:
            # an embedding row of size ~1 moved by lr * grad ~ 1e-7 rounds to a step of ulp.
            slack = np.spacing(np.abs(np.asarray(b, np.float32)))
            a, b = np.asarray(a, np.float64) - init[k], np.asarray(b, np.float64) - init[k]
        err = _leaf_error(a, b, slack)
        if not err <= worst[0]:
            worst = (err, k[2:])
    if worst[0] > TOL:
        return f"{worst[1] or 'result'} off by {worst[0]:.1e} of its scale"
    return None
