"""Comparing an nnjit layer with its torch twin: our parameters load into the torch module by
name (strict), both run on the same float64 inputs, and the outputs and the gradients of one
random linear functional of them (w.r.t. every parameter and every float input) must agree."""
from __future__ import annotations

import numpy as np

import nnjit
from nnjit import nn
from tests.helpers import assert_close


def load_into(torch, module, params, state=None):
    """`module` (in float64) with our `params` (and running `state`) loaded, strictly."""
    flat = {**nn.flatten_params(params), **nn.flatten_params(state or {})}
    module = module.double()
    module.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in flat.items()},
                           strict=True)
    return module


def leaves(tree) -> list:
    """The array leaves of nested tuples/lists (None dropped), in order."""
    if tree is None:
        return []
    if isinstance(tree, (tuple, list)):
        return [x for t in tree for x in leaves(t)]
    return [tree]


def compare(torch, ours, theirs, params, inputs, call=None, torch_call=None,
            backend: str = "interp", rtol: float = 1e-9, atol: float = 1e-10, seed: int = 0,
            state=None):
    """Assert that `call(params, *inputs)` (default: `ours.apply`) matches `torch_call(theirs,
    *torch_inputs)` (default: `theirs(*inputs)`), outputs and gradients. Integer or bool
    inputs are passed through without gradients; `state` (running statistics) is loaded into
    the torch module too. Returns our outputs."""
    call = call or (lambda p, *xs: ours.apply(p, *xs))
    torch_call = torch_call or (lambda m, *xs: m(*xs))
    theirs = load_into(torch, theirs, params, state)
    outs = nnjit.jit(call, backend=backend)(params, *inputs)
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(np.shape(o)) for o in leaves(outs)]

    def loss(p, *xs):
        return sum((o * w).sum() for o, w in zip(leaves(call(p, *xs)), weights))

    floats = tuple(i for i, x in enumerate(inputs) if np.asarray(x).dtype.kind == "f")
    grads = nnjit.jit(nnjit.grad(loss, (0,) + tuple(i + 1 for i in floats)),
                      backend=backend)(params, *inputs)
    t_inputs = [torch.tensor(np.asarray(x), requires_grad=i in floats)
                for i, x in enumerate(inputs)]
    t_outs = leaves(torch_call(theirs, *t_inputs))
    assert len(t_outs) == len(weights), f"{len(t_outs)} torch outputs, {len(weights)} ours"
    for o, t in zip(leaves(outs), t_outs):
        assert_close(o, t.detach().numpy(), rtol=rtol, atol=atol)
    sum((t * torch.tensor(w)).sum() for t, w in zip(t_outs, weights)).backward()
    t_grads = dict(theirs.named_parameters())
    for name, g in nn.flatten_params(grads[0]).items():
        assert t_grads[name].grad is not None, f"torch has no gradient for {name}"
        assert_close(g, t_grads[name].grad.numpy(), rtol=rtol * 100, atol=atol * 100)
    assert set(nn.flatten_params(grads[0])) == set(t_grads)
    for g, i in zip(grads[1:], floats):
        assert_close(g, t_inputs[i].grad.numpy(), rtol=rtol * 100, atol=atol * 100)
    return outs
