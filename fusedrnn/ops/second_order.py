"""Derivatives of the one-layer op beyond the fused kernels' first-order backward, by
differentiating the composite layer (:mod:`fusedrnn.ops.composite`).

* The VJP of ``layer_backward`` (double backward). ``layer_backward`` maps cotangents
  ``(dy, dh_n, dc_n)`` and primals ``(x, h0, c0, weights)`` to ``(dx, dh0, dc0, dweights) =
  J(primals)ᵀ · cotangents``; its own VJP is the VJP of that map, which :func:`torch.func.vjp`
  computes twice over the composite.
* Forward mode: the JVPs of ``layer_forward`` and of ``layer_backward`` (``torch.func.jvp``,
  ``jacfwd``, ``hessian``).

Slower than a fused kernel but exact, identical for every backend, and itself differentiable
(``torch.func`` results carry autograd history), so third and higher orders follow.

Tensors travel as one flat tuple ``primals = (x, h0, [c0,] *weights)`` (``c0`` only for the
LSTM) and ``cotangents = (dy, dh_n, [dc_n])``.
"""

import torch

from . import composite


def _zeros_for_none(values, likes):
    return tuple(torch.zeros_like(t) if v is None else v for v, t in zip(values, likes))


def _forward_fn(cfg, lengths):
    """``primals -> (y, h_n, [c_n])`` in composite torch ops."""
    def fwd(x, h0, *rest):
        c0, w = (rest[0], rest[1:]) if cfg.has_cell_state else (None, rest)
        y, h_n, c_n = composite.layer(cfg, x, lengths, h0, c0, w)
        return (y, h_n, c_n) if cfg.has_cell_state else (y, h_n)
    return fwd


def _backward_fn(cfg, lengths, n_primals):
    """``(*primals, *cotangents) -> gradients of the primals``: ``layer_backward`` in composite
    torch ops."""
    fwd = _forward_fn(cfg, lengths)

    def first_order(*args):
        _, vjp = torch.func.vjp(fwd, *args[:n_primals])
        return vjp(tuple(args[n_primals:]))
    return first_order


def pack_primals(cfg, x, h0, c0, weights):
    return (x, h0) + ((c0,) if cfg.has_cell_state else ()) + tuple(weights)


def pack_cotangents(cfg, dy, dh_n, dc_n):
    return (dy, dh_n, dc_n) if cfg.has_cell_state else (dy, dh_n)


def backward_vjp(cfg, lengths, dy, dh_n, dc_n, x, h0, c0, weights, gdx, gdh0, gdc0, gdweights):
    """VJP of ``layer_backward``. ``g*`` are the cotangents of its outputs (None for zero).

    Returns ``(ddy, ddh_n, ddc_n or None, gx, gh0, gc0 or None, gweights)``: the gradients with
    respect to ``layer_backward``'s tensor inputs.
    """
    primals = pack_primals(cfg, x, h0, c0, weights)
    n = len(primals)
    outs, vjp2 = torch.func.vjp(_backward_fn(cfg, lengths, n), *primals,
                                *pack_cotangents(cfg, dy, dh_n, dc_n))
    gg = pack_primals(cfg, gdx, gdh0, gdc0, gdweights)
    grads = vjp2(_zeros_for_none(gg, outs))
    k = 3 if cfg.has_cell_state else 2
    gc0 = grads[2] if cfg.has_cell_state else None
    dcot = grads[n:]
    return (dcot[0], dcot[1], dcot[2] if cfg.has_cell_state else None, grads[0], grads[1], gc0,
            list(grads[k:n]))


def forward_jvp(cfg, lengths, primals, tangents):
    """JVP of ``layer_forward``: tangents of ``(y, h_n, [c_n])``; None tangents are zero."""
    primals = tuple(t.contiguous() for t in primals)
    tangents = tuple(t.contiguous() for t in _zeros_for_none(tangents, primals))
    _, out_tangents = torch.func.jvp(_forward_fn(cfg, lengths), primals, tangents)
    return out_tangents


def backward_jvp(cfg, lengths, primals, cotangents, primal_tangents, cotangent_tangents):
    """JVP of ``layer_backward``: tangents of the primals' gradients."""
    # Dense copies: cotangents arrive with any strides (stride 0 from `.sum()`), and a dual
    # tensor cannot be built on memory that several elements share.
    args = tuple(t.contiguous() for t in tuple(primals) + tuple(cotangents))
    tangents = tuple(t.contiguous() for t in _zeros_for_none(
        tuple(primal_tangents) + tuple(cotangent_tangents), args))
    _, out_tangents = torch.func.jvp(_backward_fn(cfg, lengths, len(primals)), args, tangents)
    return out_tangents
