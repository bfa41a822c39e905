"""Builders shared by the parity tests: twin modules, inputs in every form, gradient harvest."""

import random

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

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
