"""Builders shared by the cell tests: twin cells, seeded inputs, and the float64 oracle
(``fusedrnn.reference``'s one-step forward and hand-written backward, called directly)."""

import numpy as np
import pytest
import torch

import fusedrnn
from fusedrnn import reference
from same_error import assert_same_error  # noqa: F401 (the cell tests import it from here)

# Where the module-level tests run: the GPU when there is one (there triton-step needs CUDA
# tensors), else the CPU (triton-step in the interpreter). The reference backend runs anywhere.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CELLS = {  # name -> (torch class, fusedrnn class, constructor kwargs, reference mode)
    "lstm": (torch.nn.LSTMCell, fusedrnn.LSTMCell, {}, "LSTM"),
    "gru": (torch.nn.GRUCell, fusedrnn.GRUCell, {}, "GRU"),
    "rnn_tanh": (torch.nn.RNNCell, fusedrnn.RNNCell, {"nonlinearity": "tanh"}, "RNN_TANH"),
    "rnn_relu": (torch.nn.RNNCell, fusedrnn.RNNCell, {"nonlinearity": "relu"}, "RNN_RELU"),
}


def is_lstm(cell):
    return cell == "lstm"


def twins(cell, In, H, backend, bias=True, dtype=torch.float64, device=DEVICE, seed=0):
    """``(torch cell, fusedrnn cell)`` holding the same weights."""
    torch_cls, fused_cls, kw, _ = CELLS[cell]
    torch.manual_seed(seed)
    ref = torch_cls(In, H, bias=bias, **kw).to(device, dtype)
    ours = fused_cls(In, H, bias=bias, backend=backend, **kw).to(device, dtype)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def make_inputs(cell, B, In, H, with_state=True, dtype=torch.float64, device=DEVICE, seed=0):
    """``(input, hx, leaves)``; ``B=None`` makes unbatched input. ``leaves`` get gradients."""
    g = torch.Generator().manual_seed(seed)
    batch = () if B is None else (B,)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device, dtype).requires_grad_()

    x = randn(*batch, In)
    if not with_state:
        return x, None, [x]
    h = randn(*batch, H)
    if is_lstm(cell):
        c = randn(*batch, H)
        return x, (h, c), [x, h, c]
    return x, h, [x, h]


def outputs(result):
    return list(result) if isinstance(result, tuple) else [result]


def cotangents(outs, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]


def run_module(module, inp, hx, leaves, seed=1):
    """Forward, backprop seeded random cotangents; ``(outputs, {name: grad})``."""
    outs = outputs(module(inp, hx))
    cots = [c.to(o) for c, o in zip(cotangents(outs, seed), outs)]
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(outs, leaves + list(params.values()), cots)
    names = [f"input{i}" for i in range(len(leaves))] + list(params)
    return [o.detach() for o in outs], dict(zip(names, grads))


def oracle(cell, module, inp, hx, leaves, seed=1):
    """What :func:`run_module` should return, from the NumPy float64 reference cell on the same
    (already rounded) values: outputs and every gradient, input and state ones included."""
    mode = CELLS[cell][3]
    step = reference.CELLS[mode]

    def np64(t):
        return t.detach().to("cpu", torch.float64).numpy()

    batched = inp.dim() == 2
    x = np64(inp).reshape(-1, inp.shape[-1])
    H = module.hidden_size
    B = x.shape[0]
    if hx is None:
        h, c = np.zeros((B, H)), np.zeros((B, H))
    elif is_lstm(cell):
        h, c = (np64(t).reshape(B, H) for t in hx)
    else:
        h, c = np64(hx).reshape(B, H), None
    G_H = module.weight_ih.shape[0]
    p = {"w_ih": np64(module.weight_ih), "w_hh": np64(module.weight_hh),
         "b_ih": np64(module.bias_ih) if module.bias else np.zeros(G_H),
         "b_hh": np64(module.bias_hh) if module.bias else np.zeros(G_H)}
    h_new, c_new, cache = step.forward_step(p, x, h, c)
    outs = [h_new] + ([c_new] if is_lstm(cell) else [])
    out_shape = (B, H) if batched else (H,)
    cots = [ct.numpy().reshape(B, H) for ct in
            cotangents([torch.empty(out_shape)] * len(outs), seed)]
    dx, dh, dc, dp = step.backward_step(p, cache, cots[0], cots[1] if is_lstm(cell) else None)

    def t(a, like):
        return torch.from_numpy(np.ascontiguousarray(a)).reshape(like.shape)

    want_outs = [t(o, torch.empty(out_shape)) for o in outs]
    state_grads = [dh] + ([dc] if is_lstm(cell) else [])
    leaf_grads = [t(dx, leaves[0])] + [t(g, leaf) for g, leaf in zip(state_grads, leaves[1:])]
    grads = {f"input{i}": g for i, g in enumerate(leaf_grads)}
    for name, key in [("weight_ih", "w_ih"), ("weight_hh", "w_hh"), ("bias_ih", "b_ih"),
                      ("bias_hh", "b_hh")]:
        if getattr(module, name) is not None:
            grads[name] = torch.from_numpy(dp[key])
    return want_outs, grads


@pytest.fixture
def ieee_fp32(matmul_tf32):
    """fp32 dots and GEMMs without TF32 (``cell_step.cell_dot_mode`` and the backward's cuBLAS
    GEMMs follow ``torch.backends.cuda.matmul.allow_tf32``; off by default, but a caller may
    have turned it on), so fp32 comparisons on a GPU can use fp32's tolerance; a no-op on the
    CPU, where the interpreter's dots are IEEE fp32 anyway."""
    matmul_tf32(False)
