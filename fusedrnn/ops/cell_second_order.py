"""Derivatives of the cell op beyond the backends' first-order backward: the VJP of
``cell_backward`` (double backward), by differentiating a composite torch-ops cell twice.

``cell_backward`` maps primals ``(x, h, [c,] w_ih, w_hh, [b_ih, b_hh])`` and cotangents
``(dh', [dc'])`` to the primals' gradients ``J(primals)ᵀ · cotangents``; its own VJP is the VJP
of that map, which :func:`torch.func.vjp` computes over :func:`composite_step`. Exact (the
cell's equations in plain torch ops, those the composite layer steps with), the same for
every backend, and itself differentiable, so third and higher orders follow.

Shapes: ``x [B, In]``, ``h``/``c [B, H]``, ``w_ih [G*H, In]``, ``w_hh [G*H, H]``,
``b_ih``/``b_hh [G*H]`` (G gates: LSTM 4, GRU 3, RNN 1). Absent tensors (``c`` for cells
without a cell state, biases with ``bias=False``) are None and take no part.
"""

import torch
import torch.nn.functional as F

from . import composite

PRIMAL_NAMES = ("x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh")


def composite_step(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One step in torch ops: the composite layer's own cell step (:mod:`fusedrnn.ops.composite`,
    gate order and GRU reset placement as ``torch.nn``'s cells), after the input product.
    Returns ``(h', c')`` (``c'`` None without a cell state)."""
    gi = F.linear(x, w_ih, b_ih)                                              # [B, G*H]
    w = {"w_hh": w_hh} if b_hh is None else {"w_hh": w_hh, "b_hh": b_hh}
    return composite._cell_step(mode, gi, h, c, w)


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
