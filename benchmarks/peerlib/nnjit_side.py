"""nnjit (llvm backend) contenders: jit steps with donated params, the forward with its params
as `constants=` (weights fixed at compile time, as onnxruntime's initializers), value_and_grad
of nn.cross_entropy, the chains (fresh, `out=`, donated) and a @ b."""
from __future__ import annotations

import numpy as np

from .common import Contender
from .workloads import CHAINS, LR, model


def _tree_copy(tree):
    import nnjit
    return nnjit.tree_map(np.copy, tree)


def step_fn(w):
    """The jitted SGD step of workload `w`: (params, x, y) -> (new params, loss), params
    donated (the caller passes each step's result to the next)."""
    import nnjit
    from nnjit import nn, optim

    m, opt = model(w.model), optim.SGD(lr=LR)

    def loss_fn(p, x, y):
        z = m.apply(p, x)
        if w.model == "lstm":
            z = z[0].reshape(-1, z[0].shape[-1])
            y = y.reshape(-1)
        return nn.cross_entropy(z, y)

    def step(params, x, y):
        value, grads = nnjit.value_and_grad(loss_fn)(params, x, y)
        params, _ = opt.update(params, grads, {})
        return params, value
    return nnjit.jit(step, backend="llvm", donate_argnums=(0,))


def contenders(w, data) -> dict[str, Contender]:
    import nnjit
    from nnjit import nn

    if w.kind == "step":
        fn, state = step_fn(w), [_tree_copy(data["params"])]
        x, y = data["x"], data["y"]

        def call():
            state[0], loss = fn(state[0], x, y)
            return state[0], loss
        return {"nnjit": Contender(call, lambda r: {"loss": np.float64(r[1]), "params": r[0]})}
    if w.kind == "forward":
        m = model(w.model)
        fn = nnjit.jit(lambda p, x: m.apply(p, x), backend="llvm", constants=data["params"])
        x = data["x"]
        return {"nnjit": Contender(lambda: fn(x))}
    if w.kind == "loss":
        fn = nnjit.jit(nnjit.value_and_grad(lambda z, y: nn.cross_entropy(z, y)), backend="llvm")
        z, y = data["logits"], data["labels"]
        return {"nnjit": Contender(lambda: fn(z, y),
                                   lambda r: {"loss": np.float64(r[0]), "grad": r[1]})}
    if w.kind == "chain":
        chain = CHAINS[w.chain]
        x = data["x"]
        if w.output == "fresh":
            fn = nnjit.jit(lambda v: chain(v, nnjit), backend="llvm")
            return {"nnjit": Contender(lambda: fn(x))}
        if w.output == "out":
            fn, out = nnjit.jit(lambda v: chain(v, nnjit), backend="llvm"), np.empty_like(x)
            return {"nnjit": Contender(lambda: fn(x, out=out))}
        fn, buf = nnjit.jit(lambda v: chain(v, nnjit), backend="llvm", donate_argnums=(0,)), \
            [x.copy()]

        def call():
            buf[0] = fn(buf[0])
            return buf[0]
        return {"nnjit": Contender(call, np.copy)}
    fn = nnjit.jit(lambda a, b: a @ b, backend="llvm")
    a, b = data["a"], data["b"]
    return {"nnjit": Contender(lambda: fn(a, b))}
