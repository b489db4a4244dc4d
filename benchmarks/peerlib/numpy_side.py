"""Hand-written numpy (float32) contenders where one makes sense: the loss, the MLP step and
forward, the chains (fresh; every op with out= into reused scratch; in place) and a @ b."""
from __future__ import annotations

import numpy as np

from .common import Contender
from .workloads import LR, mlp_forward, softmax_ce


def _chain_a_into(x, out, t, s):
    """Chain A with every op writing into `out` or the scratch arrays `t`, `s` (out may be x:
    x is last read by the final add)."""
    np.multiply(x, 1.5, out=t)
    t += 0.5
    np.tanh(t, out=t)
    np.negative(x, out=s)
    np.exp(s, out=s)
    s += 1.0
    np.divide(t, s, out=t)                              # tanh(..) * sigmoid(x)
    np.subtract(x, 0.25, out=s)
    np.maximum(s, 0.0, out=s)
    np.add(t, s, out=out)
    return out


def _chain_b_into(x, out, t, s=None):
    np.multiply(x, 0.5, out=t)
    t += 0.25
    np.maximum(t, 0.0, out=t)
    np.multiply(x, 0.125, out=out)
    np.subtract(t, out, out=out)
    return out


def contenders(w, data) -> dict[str, Contender]:
    from nnjit.bench import numpy_mlp_step

    if w.kind == "step" and w.model == "mlp":
        state = [data["params"]]
        x, y = data["x"], data["y"]

        def call():
            state[0], loss = numpy_mlp_step(state[0], x, y, lr=LR)
            return state[0], loss
        return {"numpy": Contender(call, lambda r: {"loss": np.float64(r[1]), "params": r[0]})}
    if w.kind == "forward" and w.model == "mlp":
        return {"numpy": Contender(lambda: mlp_forward(data["params"], data["x"]))}
    if w.kind == "loss":
        z, y = data["logits"], data["labels"]
        return {"numpy": Contender(lambda: softmax_ce(z, y),
                                   lambda r: {"loss": np.float64(r[0]), "grad": r[1]})}
    if w.kind == "chain":
        x = data["x"]
        into = {"A": _chain_a_into, "B": _chain_b_into}[w.chain]
        t, s = np.empty_like(x), np.empty_like(x)
        if w.output == "fresh":
            from .workloads import CHAINS
            return {"numpy": Contender(lambda: CHAINS[w.chain](x, np))}
        if w.output == "out":
            out, s = np.empty_like(x), np.empty_like(x)
            return {"numpy": Contender(lambda: into(x, out, t, s))}
        buf = x.copy()
        return {"numpy": Contender(lambda: into(buf, buf, t, s), np.copy)}
    if w.kind == "gemm":
        return {"numpy": Contender(lambda: data["a"] @ data["b"])}
    return {}
