"""Elman RNN (tanh / relu), ``cupy-step``: the time loops around ``rnn_step.cu``. ``TANH`` and
``RELU`` are the two kernel modules (interface of the Triton step modules).

Dimension legend: see ``lstm_step.cu`` (T, B, D, H, n, rec_rows; G = 1). Per step s with
n = n_active[s] active rows, both directions at once:

forward    rec = h_state[:, :n] @ W_hhᵀ (GEMM, fp32 result)  →  rnn_step_fwd: h → y, h_state
backward   rec = dg_state[:, :rec_rows] @ W_hh (GEMM, fp32)  →  rnn_step_bwd: dG → dg, dg_state
"""

from types import SimpleNamespace

import torch

from . import loader
from .step_launch import empty, ints, launch_rows, model_dtype, product, rows_after, scratch

GATES = 1
WORKSPACE_COLUMNS = 0
SOURCE = "rnn_step.cu"


def split_biases(dirs, H):
    """Both biases fold into the input projection: ``(xbias [D*H], None)``."""
    return torch.cat([p["b_ih"] + p["b_hh"] for p in dirs]), None


def _make(relu):
    defines = (f"-DFUSEDRNN_RELU={int(relu)}",)

    def forward(xproj, w_hh, b_hh, h0, c0, lens, n_active, y, ws):
        """Forward for s = 0 … T-1, writing ``y [T, B, D*H]`` (nothing else is saved)."""
        D, B, H = h0.shape
        dtype, device = xproj.dtype, xproj.device
        gate = loader.get_function(SOURCE, "rnn_step_fwd", dtype, defines, device=device)
        h_state = h0.to(dtype, copy=True).contiguous()                    # [D, B, H]
        w_hh_t = w_hh.transpose(1, 2)                                     # [D, H, H]
        rec_buf = scratch(D, B, H, device)
        for s in range(len(n_active)):
            n = n_active[s]
            if n == 0:
                break
            rec = product(h_state[:, :n], w_hh_t, rec_buf)                # [D, n, H]
            launch_rows(gate, n, H, D, (rec, xproj, lens, h_state, y, *ints(s, n, B, H, D)))

    def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc):
        """Backward for s = T-1 … 0. Returns ``dg_in = dg_hid [D, T, B, H]`` (fp32)."""
        D, B, H = h0.shape
        T = len(n_active)
        dtype, device = y.dtype, y.device
        dy, dh_n = model_dtype(dy, dh_n, dtype=dtype)
        gate = loader.get_function(SOURCE, "rnn_step_bwd", dtype, defines, device=device)
        dg = alloc((D, T, B, H))
        dg_state = empty((D, B, H), torch.float32, device)
        w_hh32 = w_hh.float()                                             # [D, H, H]
        rec_buf = scratch(D, B, H, device)
        for s in reversed(range(T)):
            n = n_active[s]
            if n == 0:
                continue
            n_rec = rows_after(n_active, s)
            rec = product(dg_state[:, :n_rec], w_hh32, rec_buf)           # [D, n_rec, H]
            launch_rows(gate, n, H, D, (rec, dy, dh_n, y, lens, dg, dg_state,
                                        *ints(s, n, n_rec, T, B, H, D)))
        return {"dg_in": dg, "dg_hid": dg, "dh_carry": None, "dc": None}

    return SimpleNamespace(GATES=GATES, WORKSPACE_COLUMNS=WORKSPACE_COLUMNS,
                           split_biases=split_biases, forward=forward, backward=backward)


TANH = _make(relu=False)
RELU = _make(relu=True)
