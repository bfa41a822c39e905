"""Host side of the Triton variant kernels (issue 14), shared by ``"triton-step"`` and
``"triton-persistent"``: everything around the sequential kernels of a LayerNorm / zoneout /
reset layer (contract: :mod:`fusedrnn.ops.variant_layer`; kernel interface and workspace
layout: ``kernels/triton/variants/layout.py``).

Dimension legend: T steps, B rows (sorted by length), D directions, In input features,
H hidden units, G gates (LSTM 4, GRU 3, RNN 1).

    before the loop   z     = x W_ihᵀ                                   [T, B, D*G*H], one GEMM
                      xproj = (LN(z) ⊙ γ_ih per direction, or z) + b_ih (+ b_hh: LSTM, RNN)
    the loop          kern.forward / kern.backward (one module per cell and family)
    after the loop    dz    = LN backward of dg_in (or dg_in)           [D, T, B, G*H]
                      dx    = Σ_d dz[d] W_ih[d]      dW_ih = dzᵀ x
                      dW_hh = dg_hidᵀ h_in           h_in = where(starts, h0, previous state)
                      dh0   = dh0_direct + (Σ_t starts ⊙ dg_hid) W_hh

Kernel modules: :func:`variant_kernels` finds ``kernels/triton/variants/<cell>_<family>.py``
(cell ``lstm``, ``gru``, ``rnn``; family ``step``, ``persistent``, ``persistent_split``); the
RNN module serves RNN_TANH and RNN_RELU through its ``TANH`` / ``RELU`` attributes (objects
with the module's ``forward`` / ``backward`` launchers, the activation switched by each), as
the classic ``rnn_step`` does.
"""

import torch

from ..allocation import new_empty
from ..kernels.triton.variants import layout
from .triton_step import _h_prev_sequence, _last_times, _lengths

_CELL = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn"}


def variant_kernels(mode, family):
    """The launcher module of ``mode`` in ``family`` (``"step"``, ``"persistent"`` (batch-tiled),
    ``"persistent_split"`` (hidden-split)), imported on first use: Triton modules must be
    imported after TRITON_INTERPRET is set. Plain imports (not importlib, which torch.compile
    refuses to trace: the persistent backend's limit check calls this while the graph is
    traced)."""
    from ..kernels.triton.variants import (gru_persistent, gru_persistent_split, gru_step,
                                           lstm_persistent, lstm_persistent_split, lstm_step,
                                           rnn_persistent, rnn_persistent_split, rnn_step)

    module = {"step": {"lstm": lstm_step, "gru": gru_step, "rnn": rnn_step},
              "persistent": {"lstm": lstm_persistent, "gru": gru_persistent,
                             "rnn": rnn_persistent},
              "persistent_split": {"lstm": lstm_persistent_split, "gru": gru_persistent_split,
                                   "rnn": rnn_persistent_split}}[family][_CELL[mode]]
    if mode == "RNN_TANH":
        return module.TANH
    if mode == "RNN_RELU":
        return module.RELU
    return module


def workspace_spec(cfg, x, H):
    T, B, _ = x.shape
    return (cfg.directions, T, B, layout.columns(cfg.mode, cfg.layer_norm, H)["W"]), torch.float32


def _stacked(dirs, name):
    return torch.stack([p[name] for p in dirs]).contiguous()


def _kernel_weights(cfg, dirs):
    """``w_hh [D, G*H, H]``, ``b_hh [D, G*H]`` (GRU with bias) or None, and ``ln`` (see layout)."""
    w_hh = _stacked(dirs, "w_hh")
    b_hh = _stacked(dirs, "b_hh") if cfg.has_bias and cfg.mode == "GRU" else None
    ln = None
    if cfg.layer_norm:
        names = ("ln_hh", "ln_cell_w", "ln_cell_b") if cfg.mode == "LSTM" else ("ln_hh",)
        ln = {k: _stacked(dirs, k) for k in names}
    return w_hh, b_hh, ln


def _input_gemm(cfg, x, dirs):
    """``z = x W_ihᵀ`` in fp32: ``[T*B, D, G*H]``."""
    T, B, In = x.shape
    w_ih = torch.cat([p["w_ih"] for p in dirs]).float()                          # [D*G*H, In]
    return (x.reshape(T * B, In).float() @ w_ih.t()).view(T * B, cfg.directions, -1)


def _padded(lens, T):
    """``[T, B]`` bool: positions past each row's length."""
    return torch.arange(T, device=lens.device)[:, None] >= lens[None, :]


def forward(kern, cfg, x, lengths, h0, c0, weights, starts, keep):
    """``(y [T, B, D*H], h_n [D, B, H], c_n [D, B, H] or empty, ws [D, T, B, W])``."""
    T, B, _ = x.shape
    D = cfg.directions
    dirs = cfg.split_weights(weights)
    H, _ = cfg.hidden_sizes(weights)
    xproj = _input_gemm(cfg, x, dirs)                                            # [T*B, D, G*H]
    if cfg.layer_norm:
        xproj = torch.nn.functional.layer_norm(xproj, xproj.shape[-1:], eps=layout.LN_EPS) \
            * _stacked(dirs, "ln_ih").float()
    if cfg.has_bias:
        bias = _stacked(dirs, "b_ih").float()
        if cfg.mode != "GRU":        # the GRU keeps b_hh inside the kernel, for r ⊙ a_hn
            bias = bias + _stacked(dirs, "b_hh").float()
        xproj = xproj + bias
    w_hh, b_hh, ln = _kernel_weights(cfg, dirs)
    lens, n_active = _lengths(lengths, T, B, x.device)
    y = new_empty((T, B, D * H), dtype=x.dtype, device=x.device)
    ws_shape, ws_dtype = workspace_spec(cfg, x, H)
    ws = new_empty(ws_shape, dtype=ws_dtype, device=x.device)
    padded = _padded(lens, T)
    if lengths is not None:
        # Padded positions are never written; they enter the after-loop reductions as zeros.
        ws.masked_fill_(padded[None, :, :, None], 0)
    kern.forward(xproj.contiguous().view(T, B, -1), w_hh, b_hh, ln, h0, c0, starts, keep, lens,
                 n_active, y, ws)
    if lengths is not None:
        y.masked_fill_(padded[..., None], 0)
    rows = torch.arange(B, device=x.device)
    h_n = torch.stack([y[_last_times(lens, d), rows, d * H:(d + 1) * H] for d in range(D)])
    if cfg.has_cell_state:
        o_c = layout.columns(cfg.mode, cfg.layer_norm, H)["c"]
        c_n = torch.stack([ws[d, _last_times(lens, d), rows, o_c:o_c + H] for d in range(D)])
        c_n = c_n.to(c0.dtype)
    else:
        c_n = x.new_empty(0)
    return y, h_n.contiguous(), c_n, ws


def _layer_norm_backward(z, gain, dout):
    """Backward of ``out = LN(z) ⊙ gain`` over the last dimension (N = G*H), written out so no
    autograd graph is built: with ``n = (z − μ) · rstd`` and ``dn = dout ⊙ gain``,

        dz    = rstd · (dn − mean(dn) − n · mean(dn ⊙ n))
        dgain = Σ_rows dout ⊙ n

    ``z``, ``dout`` [R, N] fp32, ``gain`` [N]. Returns ``(dz [R, N], dgain [N])``."""
    mu = z.mean(-1, keepdim=True)
    var = z.var(-1, unbiased=False, keepdim=True)
    rstd = torch.rsqrt(var + layout.LN_EPS)
    n = (z - mu) * rstd
    dn = dout * gain
    dz = rstd * (dn - dn.mean(-1, keepdim=True) - n * (dn * n).mean(-1, keepdim=True))
    return dz, (dout * n).sum(0)


def _h_in(y, h0, starts, lens, d, H):
    """``[T, B, H]``: the state each step of direction ``d`` began from (h0 where it starts)."""
    h_prev = _h_prev_sequence(y[..., d * H:(d + 1) * H], h0[d], lens, d)
    return torch.where(starts[d][..., None], h0[d][None].to(h_prev.dtype), h_prev)


def backward(kern, cfg, x, lengths, h0, c0, weights, y, ws, dy, dh_n, dc_n, starts, keep):
    """``(dx, dh0, dc0 or empty, dweights)``; dweights in the flat order of ``weights``."""
    T, B, In = x.shape
    D, G = cfg.directions, cfg.gates
    dirs = cfg.split_weights(weights)
    H, _ = cfg.hidden_sizes(weights)
    w_hh, b_hh, ln = _kernel_weights(cfg, dirs)
    lens, n_active = _lengths(lengths, T, B, x.device)
    # Padded positions of dG must be zero for the GEMMs below; dense input writes all.
    alloc = (lambda shape: torch.zeros(shape, dtype=torch.float32, device=x.device)) \
        if lengths is not None else \
        (lambda shape: new_empty(shape, dtype=torch.float32, device=x.device))
    g = kern.backward(dy, dh_n, dc_n, w_hh, b_hh, ln, ws, y, h0, c0, starts, keep, lens,
                      n_active, alloc)
    dg_in = g["dg_in"].view(D, T * B, G * H)
    dg_hid = g["dg_hid"].view(D, T * B, G * H)

    x2 = x.reshape(T * B, In).float()
    z = _input_gemm(cfg, x, dirs) if cfg.layer_norm else None                    # [T*B, D, G*H]
    w_hh32 = w_hh.float()
    dx = torch.zeros((T * B, In), dtype=torch.float32, device=x.device)
    dweights, dh0 = [], []
    for d in range(D):
        grads = {}
        if cfg.layer_norm:
            dz, grads["ln_ih"] = _layer_norm_backward(z[:, d], dirs[d]["ln_ih"].float(), dg_in[d])
            grads["ln_hh"] = g["dgain_hh"][d].sum(0)
            if cfg.mode == "LSTM":
                grads["ln_cell_w"] = g["dgain_c"][d].sum(0)
                grads["ln_cell_b"] = g["dbias_c"][d].sum(0)
        else:
            dz = dg_in[d]
        dx += dz @ dirs[d]["w_ih"].float()
        h_in = _h_in(y, h0, starts, lens, d, H).reshape(T * B, H).float()
        grads["w_ih"] = dz.t() @ x2
        grads["w_hh"] = dg_hid[d].t() @ h_in
        if cfg.has_bias:
            grads["b_ih"] = dg_in[d].sum(0)
            # LSTM/RNN: b_hh sits in xproj beside b_ih (a copy: op outputs must not alias).
            grads["b_hh"] = g["db_hh"][d].sum(0) if cfg.mode == "GRU" else grads["b_ih"].clone()
        dweights += [grads[k].to(w.dtype) for k, w in dirs[d].items()]
        # ∂L/∂h0 through the recurrent product of every step that starts from h0.
        started = (g["dg_hid"][d] * starts[d][..., None]).sum(0)                  # [B, G*H]
        dh0.append(g["dh0_direct"][d] + started @ w_hh32[d])
    dh0 = torch.stack(dh0).to(h0.dtype)
    dc0 = g["dc0"].to(c0.dtype) if cfg.has_cell_state else x.new_empty(0)
    return dx.view(T, B, In).to(x.dtype), dh0, dc0, dweights
