"""Builders shared by the parity tests: twin modules, inputs in every form, gradient harvest."""

import random

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from conftest import assert_rel_close

import fusedrnn

CELLS = {  # name -> (torch class, fusedrnn class, extra constructor kwargs)
    "lstm": (torch.nn.LSTM, fusedrnn.LSTM, {}),
    "lstm_proj": (torch.nn.LSTM, fusedrnn.LSTM, {"proj_size": 2}),
    "gru": (torch.nn.GRU, fusedrnn.GRU, {}),
    "rnn_tanh": (torch.nn.RNN, fusedrnn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (torch.nn.RNN, fusedrnn.RNN, {"nonlinearity": "relu"}),
}
FORMS = ("time_major", "batch_first", "unbatched", "packed")


def random_config(cell, form, seed):
    """A seeded random configuration; seeds cycle T and B through 1 so edge sizes always occur."""
    rng = random.Random(seed)
    return dict(
        cell=cell, form=form,
        T=(1, 2, 5)[seed % 3], B=1 if form == "unbatched" else (3, 4, 1)[seed % 3],
        In=rng.choice([1, 3, 6]), H=rng.choice([3, 5, 7]),
        layers=rng.choice([1, 2, 3]), bidirectional=rng.choice([False, True]),
        bias=rng.random() > 0.2, with_h0=rng.choice([False, True]),
    )


def twin_modules(cfg, backend, dtype=torch.float64, device="cpu"):
    torch_cls, fused_cls, kw = CELLS[cfg["cell"]]
    kwargs = dict(num_layers=cfg["layers"], bias=cfg["bias"], bidirectional=cfg["bidirectional"],
                  batch_first=cfg["form"] == "batch_first", **kw)
    ref = torch_cls(cfg["In"], cfg["H"], **kwargs).to(device, dtype)
    ours = fused_cls(cfg["In"], cfg["H"], backend=backend, **kwargs).to(device, dtype)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def make_inputs(cfg, dtype=torch.float64, device="cpu", seed=0):
    """Returns ``(input, hx, leaves)``; ``leaves`` are the tensors whose gradients are compared."""
    g = torch.Generator().manual_seed(seed)
    T, B, In, H = cfg["T"], cfg["B"], cfg["In"], cfg["H"]
    D = 2 if cfg["bidirectional"] else 1
    proj = CELLS[cfg["cell"]][2].get("proj_size", 0)
    form = cfg["form"]

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device, dtype).requires_grad_()

    leaves = []
    if form == "packed":
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[torch.randint(0, B, (1,), generator=g)] = T   # the longest defines T
        packed = pack_padded_sequence(randn(T, B, In), lengths, enforce_sorted=False)
        # The packed data itself is the leaf, so both modules backprop to it independently.
        x = packed.data.detach().requires_grad_()
        inp = PackedSequence(x, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    elif form == "unbatched":
        x = randn(T, In)
        inp = x
    elif form == "batch_first":
        x = randn(B, T, In)
        inp = x
    else:
        x = randn(T, B, In)
        inp = x
    leaves.append(x)
    hx = None
    if cfg["with_h0"]:
        state_shape = (cfg["layers"] * D,) + (() if form == "unbatched" else (B,))
        h0 = randn(*state_shape, proj or H)
        leaves.append(h0)
        hx = h0
        if cfg["cell"].startswith("lstm"):
            c0 = randn(*state_shape, H)
            leaves.append(c0)
            hx = (h0, c0)
    return inp, hx, leaves


def flat_outputs(result):
    """``(output, hidden)`` of any cell/form -> list of tensors (packed output -> its data)."""
    out, hidden = result
    out = out.data if isinstance(out, PackedSequence) else out
    return [out] + (list(hidden) if isinstance(hidden, tuple) else [hidden])


def outputs_and_grads(module, inp, hx, leaves, seed=1):
    """Run forward, backprop a random cotangent through every output; return outputs + grads."""
    for t in leaves:
        t.grad = None
    module.zero_grad()
    outs = flat_outputs(module(inp, hx))
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o)).sum() for o in outs)
    loss.backward()
    grads = [t.grad for t in leaves] + [p.grad for _, p in module.named_parameters()]
    names = [f"input{i}" for i in range(len(leaves))] + [n for n, _ in module.named_parameters()]
    return [o.detach() for o in outs], dict(zip(names, grads))


def compare_to_reference(backend, cfg, dtype, device, seed=0):
    """Run ``backend`` in ``dtype`` and the reference in float64 on the same (rounded) weights
    and inputs; compare outputs and all gradients with the dtype's tolerance. The weights are
    drawn from ``seed`` too: from the global generator they depended on which tests ran before,
    so a case could pass alone and fail in the full suite."""
    torch.manual_seed(seed)
    ref, _ = twin_modules(cfg, "reference", dtype=torch.float64)
    ours = CELLS[cfg["cell"]][1](cfg["In"], cfg["H"], **ctor_kwargs(cfg), backend=backend)
    ours = ours.to(device, dtype)
    ours.load_state_dict({k: v.to(dtype) for k, v in ref.state_dict().items()})
    ref.load_state_dict({k: v.to(dtype).double() for k, v in ref.state_dict().items()})
    fused_cls = CELLS[cfg["cell"]][1]
    oracle = fused_cls(cfg["In"], cfg["H"], **ctor_kwargs(cfg), backend="reference").double()
    oracle.load_state_dict(ref.state_dict())

    inp64, hx64, leaves64 = make_inputs(cfg, dtype=torch.float64, seed=seed)
    inp, hx, leaves = make_inputs(cfg, dtype=dtype, device=device, seed=seed)
    # The oracle sees exactly the low-precision values the kernel sees.
    with torch.no_grad():
        for lo, hi in zip(leaves, leaves64):
            hi.copy_(lo.double().cpu())
    want_outs, want_grads = outputs_and_grads(oracle, inp64, hx64, leaves64)
    got_outs, got_grads = outputs_and_grads(ours, inp, hx, leaves)
    for i, (a, b) in enumerate(zip(got_outs, want_outs)):
        assert a.dtype == dtype
        assert_rel_close(a, b, dtype, f"{cfg} output {i}")
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        assert got_grads[name].dtype == dtype, name
        assert_rel_close(got_grads[name], want_grads[name], dtype, f"{cfg} grad {name}")


def ctor_kwargs(cfg):
    return dict(num_layers=cfg["layers"], bias=cfg["bias"], bidirectional=cfg["bidirectional"],
                batch_first=cfg["form"] == "batch_first", **CELLS[cfg["cell"]][2])
