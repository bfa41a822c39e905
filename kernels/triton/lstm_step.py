"""LSTM, one Triton launch per timestep: forward and BPTT step kernels and their launchers.

Dimension legend: see ``step_common`` (T, B, D, H, Hr, G=4, BB, BH, BK).

Forward, program (batch tile, hidden tile j, direction d) at step s:
    a_g   = xproj[t, b, d, g*H+j] + h_prev[b, :] @ W_hh[d, g*H+j, :]ᵀ     g ∈ i f g o
    c     = σ(a_f) c_prev + σ(a_i) tanh(a_g)       h = σ(a_o) tanh(c)
    ws[d, t, b] = (i, f, g, o, c)  — activations, fp32, what backward needs
``xproj`` already holds ``x W_ihᵀ + b_ih + b_hh`` for all steps (one GEMM before the loop).

Backward at step s, processed from s = T-1 down to 0 (same tiles):
    dh    = dy[t, b] + (row's last step ? dh_n[b] : dG[t_next, b, :] @ W_hh[d, :, j])
    dc    = (row's last step ? dc_n[b] : dc_carry[b]) + dh σ(a_o) (1 - tanh²c)
    dG[t, b, i f g o] = (dc g σ'(i), dc c_prev σ'(f), dc i tanh'(g), dh tanh(c) σ'(o))
    dc_carry[b] = dc f                              (in place: only this program owns it)
The weight and input gradients are GEMMs over dG after the loop (see the backend).

With a projection (``proj_size = P``) h is ``(o ⊙ tanh c) W_hrᵀ``: forward adds one
``lstm_proj_fwd_kernel`` launch per step after the gate kernel; backward first computes
``dh [.., P]`` (``lstm_proj_bwd_dh_kernel``), then the gate kernel starts from
``dh W_hr`` instead of dh.
"""

import torch
import triton
import triton.language as tl

from .launch_common import BB, BH, BK, dot_mode, grid, state_operand
from .cell_math import lstm_backward, lstm_forward
from .step_common import rows_dot, step_tile, tanh

GATES = 4
WORKSPACE_COLUMNS = 5  # i f g o c, in units of H


@triton.jit
def lstm_step_fwd(
    b_tile, j_tile, d,
    p_xproj, p_whh,
    p_h, sh_d, sh_t, sh_b,
    p_c, sc_d, sc_t, sc_b,
    p_y, p_ws, p_len, s, n_active, T, B, H, Hr, D,
    HAS_PROJ: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """Forward of tile (b_tile, j_tile, d) at step s; ``CACHE`` as in ``rows_dot``."""
    d, o_b, m_b, t, t_prev, _, _, o_j, m_j, m = step_tile(
        b_tile, j_tile, d, s, p_len, n_active, H, BB, BH)

    o_h = d * sh_d + t_prev * sh_t + o_b * sh_b                                   # [BB]
    o_x = (t * B + o_b) * (D * 4 * H) + d * 4 * H                                 # [BB]
    o_w = d * 4 * H * Hr + o_j * Hr                                               # [BH]
    acc = tl.zeros([BB, BH], tl.float32)
    a_i = rows_dot(acc, p_h, o_h, m_b, Hr, p_whh, o_w, m_j, 1, BK, DOT_FP32, PRECISION, CACHE)
    a_f = rows_dot(acc, p_h, o_h, m_b, Hr, p_whh, o_w + H * Hr, m_j, 1, BK, DOT_FP32, PRECISION,
                   CACHE)
    a_g = rows_dot(acc, p_h, o_h, m_b, Hr, p_whh, o_w + 2 * H * Hr, m_j, 1, BK, DOT_FP32, PRECISION,
                   CACHE)
    a_o = rows_dot(acc, p_h, o_h, m_b, Hr, p_whh, o_w + 3 * H * Hr, m_j, 1, BK, DOT_FP32, PRECISION,
                   CACHE)
    p_xg = p_xproj + o_x[:, None] + o_j[None, :]
    o_c = d * sc_d + t_prev * sc_t + o_b * sc_b
    b_c_prev = tl.load(p_c + o_c[:, None] + o_j[None, :], mask=m, other=0.0,
                       cache_modifier=CACHE).to(tl.float32)
    b_i, b_f, b_g, b_o, b_c = lstm_forward(                                      # [BB, BH] each
        a_i + tl.load(p_xg, mask=m, other=0.0).to(tl.float32),
        a_f + tl.load(p_xg + H, mask=m, other=0.0).to(tl.float32),
        a_g + tl.load(p_xg + 2 * H, mask=m, other=0.0).to(tl.float32),
        a_o + tl.load(p_xg + 3 * H, mask=m, other=0.0).to(tl.float32), b_c_prev)

    p_w = p_ws + (((d * T + t) * B + o_b) * (5 * H))[:, None] + o_j[None, :]
    tl.store(p_w, b_i, mask=m)
    tl.store(p_w + H, b_f, mask=m)
    tl.store(p_w + 2 * H, b_g, mask=m)
    tl.store(p_w + 3 * H, b_o, mask=m)
    tl.store(p_w + 4 * H, b_c, mask=m)
    if not HAS_PROJ:  # with a projection, lstm_proj_fwd_kernel writes h
        p_out = p_y + ((t * B + o_b) * (D * Hr) + d * Hr)[:, None] + o_j[None, :]
        tl.store(p_out, (b_o * tanh(b_c)).to(p_y.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["s", "n_active"])
def lstm_step_fwd_kernel(
    p_xproj, p_whh, p_h, sh_d, sh_t, sh_b, p_c, sc_d, sc_t, sc_b, p_y, p_ws, p_len, s, n_active,
    T, B, H, Hr, D, HAS_PROJ: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr,
    BK: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    lstm_step_fwd(tl.program_id(0), tl.program_id(1), tl.program_id(2),
                  p_xproj, p_whh, p_h, sh_d, sh_t, sh_b, p_c, sc_d, sc_t, sc_b, p_y, p_ws, p_len,
                  s, n_active, T, B, H, Hr, D, HAS_PROJ, BB, BH, BK, DOT_FP32, PRECISION, "")


@triton.jit
def lstm_proj_fwd(
    b_tile, p_tile, d,
    p_ws, p_whr, p_y, p_len, s, n_active, T, B, H, P, D,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """Projection at step s: ``y[t, b, d, p] = (o ⊙ tanh c)[b, :] @ W_hr[d, p, :]ᵀ``, tile over p."""
    d, o_b, m_b, t, _, _, _, o_p, m_p, m = step_tile(
        b_tile, p_tile, d, s, p_len, n_active, P, BB, BH)
    o_w = ((d * T + t) * B + o_b) * (5 * H)                                       # [BB]
    acc = tl.zeros([BB, BH], tl.float32)
    for k0 in range(0, H, BK):
        o_k = k0 + tl.arange(0, BK)
        m_a = m_b[:, None] & (o_k < H)[None, :]
        b_o = tl.load(p_ws + o_w[:, None] + 3 * H + o_k[None, :], mask=m_a, other=0.0,
                      cache_modifier=CACHE)
        b_c = tl.load(p_ws + o_w[:, None] + 4 * H + o_k[None, :], mask=m_a, other=0.0,
                      cache_modifier=CACHE)
        b_m = b_o * tanh(b_c)                                                     # [BB, BK]
        b_w = tl.load(p_whr + d * P * H + o_p[None, :] * H + o_k[:, None],
                      mask=(o_k < H)[:, None] & m_p[None, :], other=0.0)          # [BK, BH]
        if DOT_FP32:
            acc = tl.dot(b_m, b_w.to(tl.float32), acc, input_precision=PRECISION)
        else:
            acc = tl.dot(b_m.to(b_w.dtype), b_w, acc)
    p_out = p_y + ((t * B + o_b) * (D * P) + d * P)[:, None] + o_p[None, :]
    tl.store(p_out, acc.to(p_y.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["s", "n_active"])
def lstm_proj_fwd_kernel(
    p_ws, p_whr, p_y, p_len, s, n_active, T, B, H, P, D,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    lstm_proj_fwd(tl.program_id(0), tl.program_id(1), tl.program_id(2), p_ws, p_whr, p_y, p_len,
                  s, n_active, T, B, H, P, D, BB, BH, BK, DOT_FP32, PRECISION, "")


@triton.jit
def lstm_proj_bwd_dh(
    b_tile, p_tile, d,
    p_dy, p_dhn, p_whh, p_dg, p_dh, p_len, s, n_active, T, B, H, P, D,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """With a projection, ∂L/∂h (width P) first: ``dh = dy + (last ? dh_n : dG[t_next] @ W_hh)``,
    stored to ``dh_all [D, T, B, P]`` for the gate kernel and for dW_hr after the loop."""
    d, o_b, m_b, t, _, t_next, last, o_p, m_p, m = step_tile(
        b_tile, p_tile, d, s, p_len, n_active, P, BB, BH)
    o_gn = ((d * T + t_next) * B + o_b) * (4 * H)
    rec = rows_dot(tl.zeros([BB, BH], tl.float32), p_dg, o_gn, m_b & (last == 0), 4 * H,
                   p_whh, d * 4 * H * P + o_p, m_p, P, BK, DOT_FP32, PRECISION, CACHE)
    b_dhn = tl.load(p_dhn + (d * B + o_b)[:, None] * P + o_p[None, :], mask=m, other=0.0)
    b_dy = tl.load(p_dy + ((t * B + o_b) * (D * P) + d * P)[:, None] + o_p[None, :], mask=m,
                   other=0.0).to(tl.float32)
    b_dh = b_dy + tl.where(last[:, None], b_dhn.to(tl.float32), rec)
    tl.store(p_dh + (((d * T + t) * B + o_b) * P)[:, None] + o_p[None, :], b_dh, mask=m)


@triton.jit(do_not_specialize=["s", "n_active"])
def lstm_proj_bwd_dh_kernel(
    p_dy, p_dhn, p_whh, p_dg, p_dh, p_len, s, n_active, T, B, H, P, D,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    lstm_proj_bwd_dh(tl.program_id(0), tl.program_id(1), tl.program_id(2), p_dy, p_dhn, p_whh,
                     p_dg, p_dh, p_len, s, n_active, T, B, H, P, D, BB, BH, BK, DOT_FP32,
                     PRECISION, "")


@triton.jit
def lstm_step_bwd(
    b_tile, j_tile, d,
    p_dy, p_dhn, p_dcn, p_whh, p_ws,
    p_c, sc_d, sc_t, sc_b,
    p_dg, p_dc, p_dh, p_whr, p_len, s, n_active, T, B, H, Hr, D,
    HAS_PROJ: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """Backward of tile (b_tile, j_tile, d) at step s; ``CACHE`` as in ``rows_dot``."""
    d, o_b, m_b, t, t_prev, t_next, last, o_j, m_j, m = step_tile(
        b_tile, j_tile, d, s, p_len, n_active, H, BB, BH)
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]                           # [BB, BH]

    if HAS_PROJ:
        # ∂L/∂(o ⊙ tanh c) = dh @ W_hr, with dh [.., P] from lstm_proj_bwd_dh_kernel.
        o_dh = ((d * T + t) * B + o_b) * Hr
        b_dh = rows_dot(tl.zeros([BB, BH], tl.float32), p_dh, o_dh, m_b, Hr,
                        p_whr, d * Hr * H + o_j, m_j, H, BK, DOT_FP32, PRECISION, CACHE)
    else:
        # Recurrent gradient dG[t_next] @ W_hh, for rows that have a next step.
        o_gn = ((d * T + t_next) * B + o_b) * (4 * H)                             # [BB]
        rec = rows_dot(tl.zeros([BB, BH], tl.float32), p_dg, o_gn, m_b & (last == 0), 4 * H,
                       p_whh, d * 4 * H * Hr + o_j, m_j, Hr, BK, DOT_FP32, PRECISION, CACHE)
        b_dhn = tl.load(p_dhn + o_state, mask=m, other=0.0).to(tl.float32)
        b_dy = tl.load(p_dy + ((t * B + o_b) * (D * Hr) + d * Hr)[:, None] + o_j[None, :],
                       mask=m, other=0.0).to(tl.float32)
        b_dh = b_dy + tl.where(last[:, None], b_dhn, rec)
    b_dc_in = tl.where(last[:, None], tl.load(p_dcn + o_state, mask=m, other=0.0).to(tl.float32),
                       tl.load(p_dc + o_state, mask=m, other=0.0, cache_modifier=CACHE))

    p_w = p_ws + (((d * T + t) * B + o_b) * (5 * H))[:, None] + o_j[None, :]
    b_i = tl.load(p_w, mask=m, other=0.0)
    b_f = tl.load(p_w + H, mask=m, other=0.0)
    b_g = tl.load(p_w + 2 * H, mask=m, other=0.0)
    b_o = tl.load(p_w + 3 * H, mask=m, other=0.0)
    b_tc = tanh(tl.load(p_w + 4 * H, mask=m, other=0.0))
    o_c = d * sc_d + t_prev * sc_t + o_b * sc_b
    b_c_prev = tl.load(p_c + o_c[:, None] + o_j[None, :], mask=m, other=0.0).to(tl.float32)

    g_i, g_f, g_g, g_o, b_dc = lstm_backward(b_dh, b_dc_in, b_i, b_f, b_g, b_o, b_tc, b_c_prev)
    p_g = p_dg + (((d * T + t) * B + o_b) * (4 * H))[:, None] + o_j[None, :]
    tl.store(p_g, g_i, mask=m)
    tl.store(p_g + H, g_f, mask=m)
    tl.store(p_g + 2 * H, g_g, mask=m)
    tl.store(p_g + 3 * H, g_o, mask=m)
    tl.store(p_dc + o_state, b_dc * b_f, mask=m)


@triton.jit(do_not_specialize=["s", "n_active"])
def lstm_step_bwd_kernel(
    p_dy, p_dhn, p_dcn, p_whh, p_ws, p_c, sc_d, sc_t, sc_b, p_dg, p_dc, p_dh, p_whr, p_len, s,
    n_active, T, B, H, Hr, D, HAS_PROJ: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr,
    BK: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    lstm_step_bwd(tl.program_id(0), tl.program_id(1), tl.program_id(2),
                  p_dy, p_dhn, p_dcn, p_whh, p_ws, p_c, sc_d, sc_t, sc_b, p_dg, p_dc, p_dh, p_whr,
                  p_len, s, n_active, T, B, H, Hr, D, HAS_PROJ, BB, BH, BK, DOT_FP32, PRECISION, "")


# ---------------------------------------------------------------- launchers (the time loops)


def split_biases(dirs, H):
    """Both biases fold into the input projection: ``(xbias [D*4H], None)``."""
    return torch.cat([p["b_ih"] + p["b_hh"] for p in dirs]), None


def forward(xproj, w_hh, b_hh, h0, c0, lens, n_active, y, ws, w_hr=None):
    """Run the forward step kernels for s = 0 … T-1, writing ``y [T, B, D*Hr]`` and
    ``ws [D, T, B, 5H]`` (fp32). ``xproj [T, B, D*4H]`` includes both biases (``b_hh`` is None);
    ``w_hh [D, 4H, Hr]``; ``w_hr [D, P, H]`` or None; ``lens [B]`` int64 on the device;
    ``n_active[s]`` rows run at step s."""
    D, T, B, _ = ws.shape
    H, Hr = w_hh.shape[1] // GATES, w_hh.shape[2]
    dot_fp32, precision = dot_mode(w_hh.dtype)
    for s in range(T):
        if n_active[s] == 0:
            break
        h = state_operand(h0, y, s, D, B, Hr)
        c = state_operand(c0, ws, s, D, B, H, column_offset=4 * H, row_width=5 * H)
        lstm_step_fwd_kernel[grid(n_active[s], H, D)](
            xproj, w_hh, *h, *c, y, ws, lens, s, n_active[s], T, B, H, Hr, D,
            HAS_PROJ=w_hr is not None, BB=BB, BH=BH, BK=BK, DOT_FP32=dot_fp32, PRECISION=precision,
        )
        if w_hr is not None:
            lstm_proj_fwd_kernel[grid(n_active[s], Hr, D)](
                ws, w_hr, y, lens, s, n_active[s], T, B, H, Hr, D,
                BB=BB, BH=BH, BK=BK, DOT_FP32=dot_fp32, PRECISION=precision,
            )


def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc, w_hr=None):
    """Run the backward step kernels for s = T-1 … 0. Returns ``dg_in = dg_hid [D, T, B, 4H]``
    (gate pre-activation gradients, fp32), ``dc [D, B, H]`` (∂L/∂c0 once the loop ends) and,
    with a projection, ``dh_proj [D, T, B, P]`` (∂L/∂h at every step, for dW_hr)."""
    D, T, B, _ = ws.shape
    H, Hr = w_hh.shape[1] // GATES, w_hh.shape[2]
    dot_fp32, precision = dot_mode(w_hh.dtype, backward=True)
    dg = alloc((D, T, B, 4 * H))
    dc = torch.zeros((D, B, H), dtype=torch.float32, device=ws.device)   # see gru_step.backward
    dh_proj = alloc((D, T, B, Hr)) if w_hr is not None else None
    for s in reversed(range(T)):
        if n_active[s] == 0:
            continue
        if w_hr is not None:
            lstm_proj_bwd_dh_kernel[grid(n_active[s], Hr, D)](
                dy, dh_n, w_hh, dg, dh_proj, lens, s, n_active[s], T, B, H, Hr, D,
                BB=BB, BH=BH, BK=BK, DOT_FP32=dot_fp32, PRECISION=precision,
            )
        c = state_operand(c0, ws, s, D, B, H, column_offset=4 * H, row_width=5 * H)
        lstm_step_bwd_kernel[grid(n_active[s], H, D)](
            dy, dh_n, dc_n, w_hh, ws, *c, dg, dc,
            dg if dh_proj is None else dh_proj, w_hh if w_hr is None else w_hr,
            lens, s, n_active[s], T, B, H, Hr, D,
            HAS_PROJ=w_hr is not None, BB=BB, BH=BH, BK=BK, DOT_FP32=dot_fp32, PRECISION=precision,
        )
    return {"dg_in": dg, "dg_hid": dg, "dh_carry": None, "dc": dc, "dh_proj": dh_proj}
