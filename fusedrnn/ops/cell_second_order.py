"""Derivatives of the cell op beyond the backends' first-order backward: the VJP of
``cell_backward`` (double backward), by differentiating a composite torch-ops cell twice.

``cell_backward`` maps primals ``(x, h, [c,] w_ih, w_hh, [b_ih, b_hh])`` and cotangents
``(dh', [dc'])`` to the primals' gradients ``J(primals)ᵀ · cotangents``; its own VJP is the VJP
of that map, which :func:`torch.func.vjp` computes over :func:`composite_step`. Exact (the
cell's equations in plain torch ops), the same for every backend, and itself differentiable,
so third and higher orders follow.

Shapes: ``x [B, In]``, ``h``/``c [B, H]``, ``w_ih [G*H, In]``, ``w_hh [G*H, H]``,
``b_ih``/``b_hh [G*H]`` (G gates: LSTM 4, GRU 3, RNN 1). Absent tensors (``c`` for cells
without a cell state, biases with ``bias=False``) are None and take no part.
"""

import torch
import torch.nn.functional as F

PRIMAL_NAMES = ("x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh")


def composite_step(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One step in torch ops, gate order and GRU reset placement as ``torch.nn``'s cells.
    Returns ``(h', c')`` (``c'`` None without a cell state)."""
    gi = F.linear(x, w_ih, b_ih)                                              # [B, G*H]
    gh = F.linear(h, w_hh, b_hh)                                              # [B, G*H]
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, 1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new
    if mode == "GRU":
        i_r, i_z, i_n = gi.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)     # the reset gate scales the recurrent part only
        return (1 - z) * n + z * h, None
    a = gi + gh
    return (torch.tanh(a) if mode == "RNN_TANH" else torch.relu(a)), None


def _first_order(mode, given, present, n_primals):
    """``(*present primals, *cotangents) -> gradients of the present primals``."""
    def step(*primals):
        args = {**given, **dict(zip(present, primals))}
        h_new, c_new = composite_step(mode, *(args[n] for n in PRIMAL_NAMES))
        return (h_new, c_new) if c_new is not None else (h_new,)

    def first_order(*args):
        _, vjp = torch.func.vjp(step, *args[:n_primals])
        return vjp(tuple(args[n_primals:]))
    return first_order


def backward_vjp(mode, primals, cotangents, grad_outputs):
    """VJP of ``cell_backward``.

    ``primals``: dict name -> tensor or None (:data:`PRIMAL_NAMES`); ``cotangents``:
    ``(dh', dc' or None)``; ``grad_outputs``: dict name -> cotangent of that primal's gradient,
    None for zero. Returns ``(ddh', ddc' or None, {name: gradient of the primal})``.
    """
    present = [n for n in PRIMAL_NAMES if primals[n] is not None]
    cots = tuple(t for t in cotangents if t is not None)
    args = tuple(primals[n] for n in present) + cots
    outs, vjp2 = torch.func.vjp(_first_order(mode, primals, present, len(present)), *args)
    gg = tuple(torch.zeros_like(o) if grad_outputs.get(n) is None else grad_outputs[n]
               for n, o in zip(present, outs))
    grads = vjp2(gg)
    by_name = dict(zip(present, grads[:len(present)]))
    dcots = grads[len(present):]
    return dcots[0], (dcots[1] if len(dcots) > 1 else None), by_name
