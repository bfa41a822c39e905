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

Variants (``cfg.is_variant``; :mod:`fusedrnn.ops.variant_layer` has the contract): LayerNorm
cells (the equations in :func:`_cell_step`), ``starts [D, T, B]`` (the step begins from the
initial state: resets) and ``keep [D, T, B, Hr]`` (zoneout: ``h_t = keep ⊙ h_in + (1 − keep) ⊙
h'``, where ``h_in`` is the state the step began from). This is also the ``"torch"`` backend's
form of the variants: what users write today, and what the fused kernels are compared with.
"""

import torch


LN_EPS = 1e-5   # torch.nn.LayerNorm's default, as the equations


def layer_norm(v, gain=None, bias=None):
    """LayerNorm over the last dimension, biased variance (``torch.nn.LayerNorm``)."""
    return torch.nn.functional.layer_norm(v, v.shape[-1:], gain, bias, LN_EPS)


def _cell_step(mode, gi_t, h, c, w):
    """One step of one direction. ``gi_t`` [B, G*H] is the projected input with ``b_ih`` (for a
    LayerNorm cell ``LN(x W_ihᵀ) ⊙ γ_ih + b_ih``); ``h`` [B, Hr], ``c`` [B, H] or None. Returns
    ``(h', c')``. LayerNorm cells (``"ln_hh" in w``; LN over all G*H gates, then over H for c):

        LSTM  a = gi + LN(h W_hhᵀ) ⊙ γ_hh + b_hh;  c' = σ(a_f) c + σ(a_i) tanh(a_g)
              h' = σ(a_o) tanh(LN(c') ⊙ γ_c + β_c)
        GRU   a_h = LN(h W_hhᵀ) ⊙ γ_hh + b_hh, then torch's GRU gates on (gi, a_h)
    """
    gh = h @ w["w_hh"].t()                                  # [B, G*H]
    if "ln_hh" in w:
        gh = layer_norm(gh, w["ln_hh"])
    if "b_hh" in w:
        gh = gh + w["b_hh"]
    if mode == "LSTM":
        i, f, g, o = (gi_t + gh).chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)   # [B, H]
        c_out = layer_norm(c_new, w["ln_cell_w"], w["ln_cell_b"]) if "ln_cell_w" in w else c_new
        h_new = torch.sigmoid(o) * torch.tanh(c_out)
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


def _direction(mode, x, mask, h, c, w, reverse, starts=None, keep=None):
    """One direction over the whole sequence. ``x`` [T, B, In]; ``mask`` [T, B, 1] bool or
    None; ``starts`` [T, B] bool and ``keep`` [T, B, Hr] of this direction or None. Returns
    ``(y [T, B, Hr], h_n [B, Hr], c_n [B, H] or None)``."""
    gi = x @ w["w_ih"].t()                                  # [T, B, G*H], one GEMM for all steps
    if "ln_ih" in w:
        gi = layer_norm(gi, w["ln_ih"])
    if "b_ih" in w:
        gi = gi + w["b_ih"]
    T = x.shape[0]
    h0, c0 = h, c
    ys = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        if starts is not None:                              # this step begins from h0 (c0)
            s = starts[t][:, None]                          # [B, 1]
            h = torch.where(s, h0, h)
            c = None if c is None else torch.where(s, c0, c)
        h_new, c_new = _cell_step(mode, gi[t], h, c, w)
        if keep is not None:                                # zoneout: keep ⊙ h_in + (1-keep) ⊙ h'
            h_new = keep[t].to(h_new.dtype) * h + (1 - keep[t].to(h_new.dtype)) * h_new
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


def layer(cfg, x, lengths, h0, c0, weights, starts=None, keep=None):
    """The one-layer contract in torch ops; differentiable to any order.

    ``x`` [T, B, In], ``lengths`` [B] int64 or None, ``h0`` [D, B, Hr], ``c0`` [D, B, H] or None,
    ``weights`` the layer's flat list; the variants' ``starts [D, T, B]`` and ``keep
    [D, T, B, Hr]`` or None. Returns ``(y [T, B, D*Hr], h_n [D, B, Hr], c_n [D, B, H] or None)``.
    """
    mask = None
    if lengths is not None:
        steps = torch.arange(x.shape[0], device=lengths.device)
        mask = (steps[:, None] < lengths[None, :]).to(x.device)[:, :, None]   # [T, B, 1]
    ys, hs, cs = [], [], []
    for d, w in enumerate(cfg.split_weights(list(weights))):
        y, h, c = _direction(cfg.mode, x, mask, h0[d], None if c0 is None else c0[d], w,
                             reverse=d == 1, starts=None if starts is None else starts[d],
                             keep=None if keep is None else keep[d])
        ys.append(y)
        hs.append(h)
        cs.append(c)
    y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=2)
    c_n = torch.stack(cs) if cfg.has_cell_state else None
    return y, torch.stack(hs), c_n
