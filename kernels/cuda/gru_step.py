"""GRU, ``cupy-step``: the time loops around ``gru_step.cu`` (interface of the Triton step
modules: ``GATES``, ``WORKSPACE_COLUMNS``, ``split_biases``, ``forward``, ``backward``).

Dimension legend: see ``lstm_step.cu`` (T, B, D, H, n, rec_rows; G = 3). Per step s with
n = n_active[s] active rows, both directions at once:

forward    rec = h_state[:, :n] @ W_hhᵀ          (GEMM, fp32 result, no bias)
           gru_step_fwd: + b_hn, gates, h → y, ws, h_state
backward   rec = dgh_state[:, :rec_rows] @ W_hh   (GEMM, fp32)
           gru_step_bwd: dh (+ the direct-path carry), dG → dgi, dgh, dgh_state, carry
"""

import torch

from . import loader
from .step_launch import empty, flag, ints, launch_rows, model_dtype, product, rows_after, scratch

GATES = 3
WORKSPACE_COLUMNS = 4  # r z n ghn, in units of H
SOURCE = "gru_step.cu"


def split_biases(dirs, H):
    """``(xbias [D*3H], b_hn [D, H])``: b_hr and b_hz fold into the input projection; b_hn stays
    in the kernel because the reset gate multiplies it."""
    xbias = torch.cat([p["b_ih"] + torch.cat([p["b_hh"][:2 * H], p["b_hh"].new_zeros(H)])
                       for p in dirs])
    return xbias, torch.stack([p["b_hh"][2 * H:] for p in dirs]).contiguous()


def forward(xproj, w_hh, b_hn, h0, c0, lens, n_active, y, ws):
    """Forward for s = 0 … T-1: writes ``y [T, B, D*H]`` and ``ws [D, T, B, 4H]`` (fp32).
    ``b_hn [D, H]`` or None (no bias)."""
    D, T, B, _ = ws.shape
    H = w_hh.shape[2]
    dtype, device = xproj.dtype, xproj.device
    gate = loader.get_function(SOURCE, "gru_step_fwd", dtype, device=device)
    h_state = h0.to(dtype, copy=True).contiguous()                        # [D, B, H]
    bias = xproj if b_hn is None else b_hn.to(dtype).contiguous()         # unread without bias
    w_hh_t = w_hh.transpose(1, 2)                                         # [D, H, 3H]
    rec_buf = scratch(D, B, GATES * H, device)
    for s in range(T):
        n = n_active[s]
        if n == 0:
            break
        rec = product(h_state[:, :n], w_hh_t, rec_buf)                    # [D, n, 3H]
        launch_rows(gate, n, H, D, (rec, xproj, bias, lens, h_state, y, ws,
                                    *ints(s, n, T, B, H, D), flag(b_hn is not None)))


def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc):
    """Backward for s = T-1 … 0. Returns ``dg_in``, ``dg_hid [D, T, B, 3H]`` (fp32) and the
    direct-path carry ``[D, B, H]`` that ∂L/∂h0 adds to ``dg_hid[first] @ W_hh``. fp32 GEMM
    operands, as in lstm_step.backward."""
    D, T, B, _ = ws.shape
    H = w_hh.shape[2]
    dtype, device = y.dtype, y.device
    dy, dh_n, h0 = model_dtype(dy, dh_n, h0, dtype=dtype)
    gate = loader.get_function(SOURCE, "gru_step_bwd", dtype, device=device)
    dgi, dgh = alloc((D, T, B, GATES * H)), alloc((D, T, B, GATES * H))
    dgh_state = empty((D, B, GATES * H), torch.float32, device)
    # Read only at steps that have a step after them, which wrote it first; zeros all the same
    # so no uninitialised memory is ever read.
    carry = torch.zeros((D, B, H), dtype=torch.float32, device=device)
    w_hh32 = w_hh.float()                                                 # [D, 3H, H]
    rec_buf = scratch(D, B, H, device)
    for s in reversed(range(T)):
        n = n_active[s]
        if n == 0:
            continue
        n_rec = rows_after(n_active, s)
        rec = product(dgh_state[:, :n_rec], w_hh32, rec_buf)              # [D, n_rec, H]
        launch_rows(gate, n, H, D, (rec, dy, dh_n, ws, h0, y, lens, carry, dgi, dgh, dgh_state,
                                    *ints(s, n, n_rec, T, B, H, D)))
    return {"dg_in": dgi, "dg_hid": dgh, "dh_carry": carry, "dc": None}
