"""LSTM, ``cupy-step``: the time loops around ``lstm_step.cu`` (interface of the Triton step
modules: ``GATES``, ``WORKSPACE_COLUMNS``, ``split_biases``, ``forward``, ``backward``).

Dimension legend: see ``lstm_step.cu`` (T, B, D, H, Hr, n, rec_rows; G = 4; P = Hr with a
projection). Per step s with n = n_active[s] active rows, both directions at once:

forward    rec = h_state[:, :n] @ W_hhᵀ                      (GEMM, fp32 result)
           lstm_step_fwd: gates, c, h → y, ws, c_state, h_state
           projection: hp = m[:, :n] @ W_hrᵀ (m = o ⊙ tanh c), lstm_proj_store → y, h_state
backward   rec = dg_state[:, :rec_rows] @ W_hh                (GEMM, fp32)
           lstm_step_bwd: dh, dc, dG → dg, dg_state, dc_state
           projection: lstm_proj_bwd_dh (dh [.., P] → dh_proj, dh_state), dm = dh_state @ W_hr
           (GEMM), then lstm_step_bwd starts from dm
"""

import torch

from . import loader
from .step_launch import empty, flag, ints, launch_rows, model_dtype, product, rows_after, scratch

GATES = 4
WORKSPACE_COLUMNS = 5  # i f g o c, in units of H
SOURCE = "lstm_step.cu"


def split_biases(dirs, H):
    """Both biases fold into the input projection: ``(xbias [D*4H], None)``."""
    return torch.cat([p["b_ih"] + p["b_hh"] for p in dirs]), None


def forward(xproj, w_hh, b_hh, h0, c0, lens, n_active, y, ws, w_hr=None):
    """Forward for s = 0 … T-1: writes ``y [T, B, D*Hr]`` and ``ws [D, T, B, 5H]`` (fp32).
    ``xproj [T, B, D*4H]`` includes both biases (``b_hh`` is None); ``w_hh [D, 4H, Hr]``;
    ``w_hr [D, P, H]`` or None; ``lens [B]`` int64 on the device."""
    D, T, B, _ = ws.shape
    H, Hr = w_hh.shape[1] // GATES, w_hh.shape[2]
    dtype, device = xproj.dtype, xproj.device
    gate = loader.get_function(SOURCE, "lstm_step_fwd", dtype, device=device)
    h_state = h0.to(dtype, copy=True).contiguous()                        # [D, B, Hr]
    c_state = c0.to(torch.float32, copy=True).contiguous()                # [D, B, H]
    # With a projection the gate kernel's h is o ⊙ tanh c, the projection GEMM's input.
    h_out = h_state if w_hr is None else empty((D, B, H), dtype, device)
    w_hh_t = w_hh.transpose(1, 2)                                         # [D, Hr, 4H]
    rec_buf = scratch(D, B, GATES * H, device)
    if w_hr is not None:
        store = loader.get_function(SOURCE, "lstm_proj_store", dtype, device=device)
        w_hr_t = w_hr.transpose(1, 2)                                     # [D, H, P]
        hp_buf = scratch(D, B, Hr, device)
    for s in range(T):
        n = n_active[s]
        if n == 0:
            break
        rec = product(h_state[:, :n], w_hh_t, rec_buf)                    # [D, n, 4H]
        launch_rows(gate, n, H, D, (rec, xproj, lens, c_state, h_out, y, ws,
                                    *ints(s, n, T, B, H, D), flag(w_hr is not None)))
        if w_hr is not None:
            hp = product(h_out[:, :n], w_hr_t, hp_buf)                    # [D, n, P]
            launch_rows(store, n, Hr, D, (hp, lens, h_state, y, *ints(s, n, B, Hr, D)))


def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc, w_hr=None):
    """Backward for s = T-1 … 0. Returns ``dg_in = dg_hid [D, T, B, 4H]`` (fp32), ``dc
    [D, B, H]`` (∂L/∂c0) and, with a projection, ``dh_proj [D, T, B, P]`` (∂L/∂h, for dW_hr).
    The recurrent GEMMs run on fp32 operands (dG is fp32; an fp16 dG could underflow or
    overflow, the reason the Triton step kernels use fp32 operands in fp16 backward)."""
    D, T, B, _ = ws.shape
    H, Hr = w_hh.shape[1] // GATES, w_hh.shape[2]
    dtype, device = y.dtype, y.device
    dy, dh_n, dc_n, c0 = model_dtype(dy, dh_n, dc_n, c0, dtype=dtype)
    gate = loader.get_function(SOURCE, "lstm_step_bwd", dtype, device=device)
    dg = alloc((D, T, B, GATES * H))
    dg_state = empty((D, B, GATES * H), torch.float32, device)
    dc = torch.zeros((D, B, H), dtype=torch.float32, device=device)
    w_hh32 = w_hh.float()                                                 # [D, 4H, Hr]
    rec_buf = scratch(D, B, Hr, device)
    dh_proj = None
    if w_hr is not None:
        to_dh = loader.get_function(SOURCE, "lstm_proj_bwd_dh", dtype, device=device)
        dh_proj = alloc((D, T, B, Hr))
        dh_buf, dm_buf = scratch(D, B, Hr, device), scratch(D, B, H, device)
        w_hr32 = w_hr.float()                                             # [D, P, H]
    for s in reversed(range(T)):
        n = n_active[s]
        if n == 0:
            continue
        n_rec = rows_after(n_active, s)
        rec = product(dg_state[:, :n_rec], w_hh32, rec_buf)               # [D, n_rec, Hr]
        if w_hr is not None:
            dh_state = dh_buf[:D * n * Hr].view(D, n, Hr)
            launch_rows(to_dh, n, Hr, D, (rec, dy, dh_n, lens, dh_proj, dh_state,
                                          *ints(s, n, n_rec, T, B, Hr, D)))
            rec, n_rec = product(dh_state, w_hr32, dm_buf), n             # [D, n, H]
        launch_rows(gate, n, H, D, (rec, dy, dh_n, dc_n, ws, c0, lens, dc, dg, dg_state,
                                    *ints(s, n, n_rec, T, B, H, D), flag(w_hr is not None)))
    return {"dg_in": dg, "dg_hid": dg, "dh_carry": None, "dc": dc, "dh_proj": dh_proj}
