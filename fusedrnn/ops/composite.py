"""One recurrent layer written in plain, differentiable torch ops: the op's composite form.

This is the same one-layer contract as ``torch.ops.fusedrnn.layer_forward`` (see
:mod:`fusedrnn.ops.layer`), spelled as a Python time loop over the cell equations of DESIGN §3.
It is what every backend falls back to where a fused kernel cannot go:

* the autograd formula of ``layer_backward`` (double backward differentiates this, so every
  backend gets exact higher-order gradients at once);
* the decomposition of the op for ``torch.export`` / ``run_decompositions()`` (aten ops only);
* the ``torch.func.vmap`` rule where the vmapped dimension cannot be folded into the batch.

Dimensions: T time steps, B batch rows, In input features, G gates (LSTM 4, GRU 3, RNN 1),
H cell width, Hr emitted width (P with an LSTM projection, else H), D directions.

Variable length (``lengths`` [B], non-increasing, in [1, T]): at a padded position the step
emits zeros and the state does not advance, so the reverse direction, walking from t = T-1
down, keeps its initial state until it reaches each row's own last step.
"""

import torch


def _cell_step(mode, gi_t, h, c, w):
    """One step of one direction. ``gi_t`` [B, G*H] is the projected input with ``b_ih``;
    ``h`` [B, Hr], ``c`` [B, H] or None. Returns ``(h', c')``."""
    gh = h @ w["w_hh"].t()                                  # [B, G*H]
    if "b_hh" in w:
        gh = gh + w["b_hh"]
    if mode == "LSTM":
        i, f, g, o = (gi_t + gh).chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)   # [B, H]
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        if "w_hr" in w:
            h_new = h_new @ w["w_hr"].t()                   # [B, P]
        return h_new, c_new
    if mode == "GRU":
        xr, xz, xn = gi_t.chunk(3, dim=1)
        hr, hz, hn = gh.chunk(3, dim=1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)                         # reset after the matmul (cuDNN)
        return (1 - z) * n + z * h, None
    pre = gi_t + gh
    return (torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)), None


def _direction(mode, x, mask, h, c, w, reverse):
    """One direction over the whole sequence. ``x`` [T, B, In]; ``mask`` [T, B, 1] bool or
    None. Returns ``(y [T, B, Hr], h_n [B, Hr], c_n [B, H] or None)``."""
    gi = x @ w["w_ih"].t()                                  # [T, B, G*H], one GEMM for all steps
    if "b_ih" in w:
        gi = gi + w["b_ih"]
    T = x.shape[0]
    ys = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_new, c_new = _cell_step(mode, gi[t], h, c, w)
        if mask is None:
            h, c, ys[t] = h_new, c_new, h_new
        else:
            m = mask[t]                                     # [B, 1]
            ys[t] = torch.where(m, h_new, torch.zeros_like(h_new))
            h = torch.where(m, h_new, h)
            if c is not None:
                c = torch.where(m, c_new, c)
    y = torch.stack(ys) if T else x.new_empty((0, x.shape[1], h.shape[-1]))
    return y, h, c


def layer(cfg, x, lengths, h0, c0, weights):
    """The one-layer contract in torch ops; differentiable to any order.

    ``x`` [T, B, In], ``lengths`` [B] int64 or None, ``h0`` [D, B, Hr], ``c0`` [D, B, H] or None,
    ``weights`` the layer's flat list. Returns ``(y [T, B, D*Hr], h_n [D, B, Hr],
    c_n [D, B, H] or None)``.
    """
    mask = None
    if lengths is not None:
        steps = torch.arange(x.shape[0], device=lengths.device)
        mask = (steps[:, None] < lengths[None, :]).to(x.device)[:, :, None]   # [T, B, 1]
    ys, hs, cs = [], [], []
    for d, w in enumerate(cfg.split_weights(list(weights))):
        y, h, c = _direction(cfg.mode, x, mask, h0[d], None if c0 is None else c0[d], w,
                             reverse=d == 1)
        ys.append(y)
        hs.append(h)
        cs.append(c)
    y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=2)
    c_n = torch.stack(cs) if cfg.has_cell_state else None
    return y, torch.stack(hs), c_n
