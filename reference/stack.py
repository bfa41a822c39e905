"""A stack of recurrent layers with dropout between them (float64 NumPy).

Shapes (L layers, D directions):

    x              [T, B, In]
    lengths        [B] or None
    h0             [L*D, B, Hr]   (index ``layer * D + direction``, as torch's h_n)
    c0             [L*D, B, H] or None
    params         list over layers of a list over directions of parameter dicts
    dropout_masks  None, or L-1 arrays ``[T, B, D*Hr]`` that multiply each layer's output but
                   the last; a mask carries F.dropout's scaling, i.e. holds 0 or 1/(1-p)

Layer k>0 reads layer k-1's output (both directions concatenated, after the mask).
"""

import numpy as np

from .layer import layer_backward, layer_forward


def stack_forward(cell, x, lengths, h0, c0, params, dropout_masks=None):
    """Returns ``(y [T, B, D*Hr], h_n [L*D, B, Hr], c_n or None, cache)``."""
    D = len(params[0])
    layer_caches, hs, cs = [], [], []
    inp = x
    for k, layer_params in enumerate(params):
        sl = slice(k * D, (k + 1) * D)
        y, h_n, c_n, cache = layer_forward(
            cell, inp, lengths, h0[sl], None if c0 is None else c0[sl], layer_params
        )
        layer_caches.append(cache)
        hs.append(h_n)
        cs.append(c_n)
        if dropout_masks is not None and k < len(params) - 1:
            y = y * dropout_masks[k]
        inp = y
    c_n = None if c0 is None else np.concatenate(cs)
    return inp, np.concatenate(hs), c_n, (layer_caches, D, dropout_masks)


def stack_backward(cache, dy, dh_n, dc_n):
    """Returns ``(dx, dh0 [L*D, B, Hr], dc0 or None, dparams)`` with ``dparams`` shaped as ``params``."""
    layer_caches, D, dropout_masks = cache
    L = len(layer_caches)
    dh0, dc0, dparams = [None] * L, [None] * L, [None] * L
    d_out = dy
    for k in reversed(range(L)):
        sl = slice(k * D, (k + 1) * D)
        if dropout_masks is not None and k < L - 1:
            d_out = d_out * dropout_masks[k]
        d_out, dh0[k], dc0[k], dparams[k] = layer_backward(
            layer_caches[k], d_out, dh_n[sl], None if dc_n is None else dc_n[sl]
        )
    dc0 = None if dc_n is None else np.concatenate(dc0)
    return d_out, np.concatenate(dh0), dc0, dparams
