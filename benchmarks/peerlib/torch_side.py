"""PyTorch contenders: eager (nn modules, torch.optim.SGD, autograd) and torch.compile of the
whole step (forward, backward and optimizer step in one compiled function; dynamo splits it at
backward() as it does for any training loop). Chains: out= / in-place ops into reused scratch
in eager; for torch.compile, `out.copy_(chain(x))`, which inductor writes straight into out."""
from __future__ import annotations

import numpy as np

from .common import Contender, from_torch_names, torch_names
from .workloads import CHAINS, LR


def _module(torch, w):
    nn = torch.nn
    if w.model == "mlp":
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 10))
    if w.model == "lenet":
        return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                             nn.Linear(84, 10))
    from .workloads import EMBED, HIDDEN, VOCAB

    class CharLSTM(nn.Module):              # the names match nnjit's CharLSTM params
        def __init__(self):
            super().__init__()
            self.embed, self.lstm = nn.Embedding(VOCAB, EMBED), nn.LSTM(EMBED, HIDDEN)
            self.head = nn.Linear(HIDDEN, VOCAB)

        def forward(self, ids):
            return self.head(self.lstm(self.embed(ids))[0]).reshape(-1, VOCAB)
    return CharLSTM()


def _loaded(torch, w, params):
    m = _module(torch, w)
    m.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in torch_names(params).items()})
    return m


def _step(torch, w, data, compiled: bool) -> Contender:
    F = torch.nn.functional
    m = _loaded(torch, w, data["params"])
    opt = torch.optim.SGD(m.parameters(), lr=LR)
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"]).reshape(-1)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        return loss.detach()
    fn = torch.compile(step) if compiled else step
    return Contender(fn, lambda loss: {
        "loss": np.float64(loss.item()),
        "params": from_torch_names({k: v.detach().numpy() for k, v in m.named_parameters()})})


def _forward(torch, w, data, compiled: bool) -> Contender:
    m = _loaded(torch, w, data["params"]).eval()
    x = torch.from_numpy(data["x"])
    fn = torch.compile(m) if compiled else m

    def call():
        with torch.inference_mode():
            return fn(x)
    return Contender(call, lambda r: r.numpy())


def _loss(torch, data, compiled: bool) -> Contender:
    F = torch.nn.functional
    z0, y = torch.from_numpy(data["logits"]), torch.from_numpy(data["labels"])
    ce = torch.compile(F.cross_entropy) if compiled else F.cross_entropy

    def call():
        z = z0.detach().requires_grad_()
        loss = ce(z, y)
        (g,) = torch.autograd.grad(loss, z)
        return loss.detach(), g
    return Contender(call, lambda r: {"loss": np.float64(r[0].item()), "grad": r[1].numpy()})


def _chain_eager(torch, chain: str, x, out, t, s):
    """The chain with every op writing into out, t or s (out may be x)."""
    if chain == "A":
        torch.mul(x, 1.5, out=t).add_(0.5).tanh_()
        torch.sigmoid(x, out=s)
        t.mul_(s)
        torch.sub(x, 0.25, out=s).relu_()
        return torch.add(t, s, out=out)
    torch.mul(x, 0.5, out=t).add_(0.25).relu_()
    torch.mul(x, 0.125, out=out)
    return torch.sub(t, out, out=out)


class _TorchMath:
    """The numpy names the chain functions use, as torch ops."""

    def __init__(self, torch):
        self.tanh, self.exp = torch.tanh, torch.exp
        self.maximum = lambda a, v: torch.clamp_min(a, v)


def _chain(torch, w, data, compiled: bool) -> Contender:
    x = torch.from_numpy(data["x"].copy() if w.output == "inplace" else data["x"])
    tm = _TorchMath(torch)
    fetch = (lambda r: r.numpy().copy())
    if compiled:
        if w.output == "fresh":
            fn = torch.compile(lambda v: CHAINS[w.chain](v, tm))
            return Contender(lambda: fn(x), fetch)
        out = torch.empty_like(x) if w.output == "out" else x
        fn = torch.compile(lambda v, o: o.copy_(CHAINS[w.chain](v, tm)))
        return Contender(lambda: fn(x, out), fetch)
    if w.output == "fresh":
        return Contender(lambda: CHAINS[w.chain](x, tm), fetch)
    t, s = torch.empty_like(x), torch.empty_like(x)
    out = torch.empty_like(x) if w.output == "out" else x
    return Contender(lambda: _chain_eager(torch, w.chain, x, out, t, s), fetch)


def contenders(w, data) -> dict[str, Contender]:
    import torch

    out = {}
    for name, compiled in (("torch", False), ("torch.compile", True)):
        if w.kind == "step":
            out[name] = _step(torch, w, data, compiled)
        elif w.kind == "forward":
            out[name] = _forward(torch, w, data, compiled)
        elif w.kind == "loss":
            out[name] = _loss(torch, data, compiled)
        elif w.kind == "chain":
            out[name] = _chain(torch, w, data, compiled)
        elif not compiled:                          # GEMM: one library call, nothing to compile
            a, b = torch.from_numpy(data["a"]), torch.from_numpy(data["b"])
            out[name] = Contender(lambda: a @ b, lambda r: r.numpy())
    return out
