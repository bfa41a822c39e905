"""One recurrent layer, one or two directions, over padded time-major input (float64 NumPy).

Shapes (D = number of directions, Hr = P with an LSTM projection, else H):

    x       [T, B, In]     padded input, time-major
    lengths [B] or None    valid steps of each sequence; None means every sequence has T
    h0      [D, B, Hr]     initial hidden state per direction
    c0      [D, B, H]      initial cell state per direction (LSTM), else None
    y       [T, B, D*Hr]   output; positions at or past a sequence's length are 0
    h_n     [D, B, Hr]     hidden state after each sequence's own last valid step
    c_n     [D, B, H]      the same for the LSTM cell state, else None

Variable length: at step t a sequence with ``lengths[b] <= t`` neither emits nor advances its
state. The reverse direction starts at each sequence's *own* last element: it runs forward over
``reverse_padded(x, lengths)`` (each sequence reversed within its length) and reverses the
output back.

``params`` is a list with one dict per direction: ``w_ih``, ``w_hh``, optionally ``b_ih``,
``b_hh`` (absent when the layer has no bias) and ``w_hr`` (LSTM projection); a LayerNorm cell's
dicts add ``ln_ih``, ``ln_hh`` (and ``ln_cell_w``, ``ln_cell_b``).

Variants (issue 14; the contract is ``fusedrnn/ops/variant_layer.py``), both indexed by
forward time t for both directions (the reverse direction's are ``reverse_padded`` like x):

    starts  [D, T, B] bool or None      the step begins from h0/c0 (each row's first step,
                                        resets); None: only the first step does (classic)
    keep    [D, T, B, Hr] or None       zoneout: h_t = keep ⊙ h_in + (1 − keep) ⊙ h'

where h_in is the state the step began from and h' the cell's new h (c is not zoned out).
BPTT: ∂L/∂h_in(t) = keep ⊙ ∂L/∂h_t + the cell's ∂L/∂h_prev (from (1 − keep) ⊙ ∂L/∂h_t); at a
step that starts afresh it goes to ∂L/∂h0 (summed over every such step), not to step t − 1.
"""

import numpy as np


def reverse_padded(x, lengths):
    """Reverse each sequence of ``x [T, B, ...]`` within its own length; padding stays put.

    Its own inverse: ``reverse_padded(reverse_padded(x, l), l) == x``.
    """
    out = x.copy()
    for b, n in enumerate(lengths):
        out[:n, b] = x[:n, b][::-1]
    return out


def _with_zero_biases(p):
    gate_rows = p["w_ih"].shape[0]
    full = dict(p)
    full.setdefault("b_ih", np.zeros(gate_rows))
    full.setdefault("b_hh", np.zeros(gate_rows))
    return full


def _direction_forward(cell, p, x, active, h0, c0, starts=None, keep=None):
    """Run ``cell`` forward over all T steps. ``active [T, B, 1]`` is 1 where a step is valid;
    ``starts [T, B]`` bool and ``keep [T, B, Hr]`` of this direction, in its own order, or None."""
    T = x.shape[0]
    h, c = h0, c0
    ys, caches = [], []
    for t in range(T):
        m = active[t]
        h_in, c_in = h, c
        if starts is not None:      # this step begins from the initial state
            s = starts[t][:, None]                               # [B, 1]
            h_in = np.where(s, h0, h)
            c_in = None if c is None else np.where(s, c0, c)
        h_step, c_step, cache = cell.forward_step(p, x[t], h_in, c_in)
        if keep is not None:        # zoneout blends the new h with the one the step began from
            h_step = keep[t] * h_in + (1.0 - keep[t]) * h_step
        # Finished sequences keep their state and emit zeros.
        h = m * h_step + (1.0 - m) * h
        if c is not None:
            c = m * c_step + (1.0 - m) * c
        ys.append(m * h_step)
        caches.append(cache)
    return np.stack(ys), h, c, caches


def _direction_backward(cell, p, caches, active, dy, dh_n, dc_n, starts=None, keep=None):
    """BPTT over one direction: walk t = T-1 … 0 carrying ∂L/∂h (and ∂L/∂c) backwards.
    Returns ``(dx, dh0, dc0, grads)``; ``starts``/``keep`` as in :func:`_direction_forward`."""
    T = dy.shape[0]
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dx = np.zeros((T,) + caches[0][0].shape)
    dh, dc = dh_n, dc_n
    dh0 = 0.0                       # from the steps that start afresh (starts given)
    dc0 = None if dc is None else 0.0
    for t in reversed(range(T)):
        m = active[t]
        # A valid step receives its output gradient plus the carried one; an invalid step
        # passes the carried gradient straight through (its state was copied).
        dh_step = m * (dy[t] + dh)
        dc_step = None if dc is None else m * dc
        dh_cell = dh_step if keep is None else (1.0 - keep[t]) * dh_step
        dx[t], dh_prev, dc_prev, step_grads = cell.backward_step(p, caches[t], dh_cell, dc_step)
        if keep is not None:
            dh_prev = dh_prev + keep[t] * dh_step
        if starts is not None:      # a fresh start sends its state gradient to h0/c0 instead
            s = starts[t][:, None]                               # [B, 1]
            dh0 = dh0 + np.where(s, dh_prev, 0.0)
            dh_prev = np.where(s, 0.0, dh_prev)
            if dc is not None:
                dc0 = dc0 + np.where(s, dc_prev, 0.0)
                dc_prev = np.where(s, 0.0, dc_prev)
        dh = dh_prev + (1.0 - m) * dh
        if dc is not None:
            dc = dc_prev + (1.0 - m) * dc
        for k, g in step_grads.items():
            grads[k] += g
    if starts is None:
        return dx, dh, dc, grads
    # What reaches the state before step 0 is h0's too (a row whose first step is not marked).
    return dx, dh0 + dh, (None if dc is None else dc0 + dc), grads


def _per_direction(a, d, lengths):
    """Direction ``d``'s slice of ``starts``/``keep`` in the order it runs (None stays None)."""
    if a is None:
        return None
    return a[d] if d == 0 else reverse_padded(a[d], lengths)


def layer_forward(cell, x, lengths, h0, c0, params, starts=None, keep=None):
    """Forward pass of one layer. Returns ``(y, h_n, c_n, cache)``; see the module docstring."""
    T, B, _ = x.shape
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    active = (np.arange(T)[:, None] < lengths[None, :]).astype(np.float64)[:, :, None]
    ys, hs, cs, caches, variants = [], [], [], [], []
    for d, p in enumerate(params):
        p = _with_zero_biases(p)
        x_d = x if d == 0 else reverse_padded(x, lengths)
        c0_d = None if c0 is None else c0[d]
        s_d, k_d = _per_direction(starts, d, lengths), _per_direction(keep, d, lengths)
        y_d, h_d, c_d, caches_d = _direction_forward(cell, p, x_d, active, h0[d], c0_d, s_d, k_d)
        ys.append(y_d if d == 0 else reverse_padded(y_d, lengths))
        hs.append(h_d)
        cs.append(c_d)
        caches.append(caches_d)
        variants.append((s_d, k_d))
    y = np.concatenate(ys, axis=2)
    c_n = None if c0 is None else np.stack(cs)
    return y, np.stack(hs), c_n, (cell, params, lengths, active, caches, variants)


def layer_backward(cache, dy, dh_n, dc_n):
    """Backward pass of one layer.

    Returns ``(dx [T, B, In], dh0 [D, B, Hr], dc0 [D, B, H] or None, dparams)`` where
    ``dparams`` has one dict per direction with a gradient for every key of ``params``.
    """
    cell, params, lengths, active, caches, variants = cache
    D = len(params)
    Hr = dy.shape[2] // D
    dx = 0.0
    dh0, dc0, dparams = [], [], []
    for d, p_given in enumerate(params):
        p = _with_zero_biases(p_given)
        dy_d = dy[:, :, d * Hr:(d + 1) * Hr]
        if d == 1:
            dy_d = reverse_padded(dy_d, lengths)
        dc_d = None if dc_n is None else dc_n[d]
        dx_d, dh_d, dc_d, g = _direction_backward(cell, p, caches[d], active, dy_d, dh_n[d], dc_d,
                                                  *variants[d])
        dx = dx + (dx_d if d == 0 else reverse_padded(dx_d, lengths))
        dh0.append(dh_d)
        dc0.append(dc_d)
        dparams.append({k: g[k] for k in p_given})
    return dx, np.stack(dh0), (None if dc_n is None else np.stack(dc0)), dparams
