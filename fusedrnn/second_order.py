"""Second-order autograd of the one-layer op: the VJP of ``layer_backward``, by differentiating
the composite layer (:mod:`fusedrnn.composite`).

``layer_backward`` maps cotangents ``(dy, dh_n, dc_n)`` and primals ``(x, h0, c0, weights)`` to
``(dx, dh0, dc0, dweights) = J(primals)ᵀ · cotangents``. Its own VJP, given cotangents ``gg`` of
those results, is the VJP of that map, which :func:`torch.func.vjp` computes twice over the
composite. Slower than a fused kernel but exact, identical for every backend, and itself
differentiable (``torch.func.vjp`` results carry autograd history), so third and higher orders
follow.
"""

import torch

from . import composite


def _zeros_for_none(grads, likes):
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, likes)]


def backward_vjp(cfg, lengths, dy, dh_n, dc_n, x, h0, c0, weights, gdx, gdh0, gdc0, gdweights):
    """VJP of ``layer_backward``. ``g*`` are the cotangents of its outputs (None for zero).

    Returns ``(ddy, ddh_n, ddc_n or None, gx, gh0, gc0 or None, gweights)``: the gradients with
    respect to ``layer_backward``'s tensor inputs.
    """
    lstm = cfg.has_cell_state
    weights = list(weights)
    nw = len(weights)

    def first_order(x, h0, *rest):
        c0_, rest = (rest[0], rest[1:]) if lstm else (None, rest)
        w, cot = list(rest[:nw]), rest[nw:]

        def fwd(x, h0, *rest):
            c0_, w = (rest[0], rest[1:]) if lstm else (None, rest)
            y, h_n, c_n = composite.layer(cfg, x, lengths, h0, c0_, w)
            return (y, h_n, c_n) if lstm else (y, h_n)

        _, vjp = torch.func.vjp(fwd, x, h0, *(((c0_,) if lstm else ()) + tuple(w)))
        return vjp(tuple(cot))

    cot = (dy, dh_n, dc_n) if lstm else (dy, dh_n)
    primals = (x, h0) + ((c0,) if lstm else ()) + tuple(weights) + cot
    outs, vjp2 = torch.func.vjp(first_order, *primals)
    gg = [gdx, gdh0] + ([gdc0] if lstm else []) + list(gdweights)
    grads = vjp2(tuple(_zeros_for_none(gg, outs)))
    gx, gh0 = grads[0], grads[1]
    k = 2
    gc0 = None
    if lstm:
        gc0, k = grads[2], 3
    gweights = list(grads[k:k + nw])
    dcot = grads[k + nw:]
    ddc_n = dcot[2] if lstm else None
    return dcot[0], dcot[1], ddc_n, gx, gh0, gc0, gweights
