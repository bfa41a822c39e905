"""LSTM, batch-tiled persistent form: one launch for the whole sequence, forward and backward.

Dimension legend: see ``persistent_common`` (T, B, D, H, HP, BB; G = 4).

Forward, program (batch tile, direction), for s = 0 … max(len)-1 with W_hh, h, c in registers:
    a_g = xproj[t, b, d, g] + h @ W_hh[d, g]ᵀ      c' = σ(a_f) c + σ(a_i) tanh(a_g)
    h'  = σ(a_o) tanh(c')                          ws[d, t, b] = (i, f, g, o, c') as in lstm_step
Backward, s = max(len)-1 … 0, carrying ∂L/∂h and ∂L/∂c in registers:
    dh  = dy[t, b] + (row's last step ? dh_n : Σ_g dG_g[s+1] @ W_hh[d, g])
    the gate backward of ``lstm_step``; dG goes to ``dg`` for the GEMMs after the loop.
The workspace and gradient layouts are those of ``lstm_step``, so the host side is shared.
"""

import torch
import triton
import triton.language as tl

from .launch_common import dot_mode
from .persistent_common import load_square, mm, padded_hidden, step_times, tile_rows
from .cell_math import lstm_backward, lstm_forward
from .lstm_step import GATES, WORKSPACE_COLUMNS, split_biases  # noqa: F401  (same layouts)
from .step_common import tanh

# Register-resident W_hh (4 tiles of HP×HP): the largest H whose kernels compile for sm_90
# without spills, per dot configuration, measured with ptxas at 8 warps (and kept checked by
# tests/test_ptx_compile.py). TF32 and bf16: HP=64 fits (fwd 178, bwd 254/239 registers);
# HP=128 spills 96–376 bytes. IEEE fp32: at HP=64 the forward aborts LLVM and the backward
# spills 112 bytes; HP=32 fits (84/160). fp16 (backward on fp32 operands): HP=64 spills 8
# bytes; HP=32 fits (156). At 4 warps TF32 HP=64 spills too, hence NUM_WARPS = 8. Speed is
# unmeasured (no GPU yet).
MAX_HIDDEN = {"fp32-tf32": 64, "fp32-ieee": 32, "fp16": 32, "bf16": 64}
NUM_WARPS = 8
BB = 16   # tl.dot's minimum tile side


@triton.jit
def lstm_persistent_fwd_kernel(
    p_xproj, p_whh, p_h0, p_c0, p_y, p_ws, p_len, T, B, H, D,
    HP: tl.constexpr, BB: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    base = d * 4 * H * H
    w_i = load_square(p_whh, base, o_j, o_j, H, True)                            # [HP(k), HP(j)]
    w_f = load_square(p_whh, base + H * H, o_j, o_j, H, True)
    w_g = load_square(p_whh, base + 2 * H * H, o_j, o_j, H, True)
    w_o = load_square(p_whh, base + 3 * H * H, o_j, o_j, H, True)
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]                           # [BB, HP]
    m = m_row[:, None] & m_j[None, :]
    b_h = tl.load(p_h0 + o_state, mask=m, other=0.0).to(tl.float32)
    b_c = tl.load(p_c0 + o_state, mask=m, other=0.0).to(tl.float32)
    for s in range(0, n_steps):
        active, t, _ = step_times(s, d, lens, m_row)
        ma = active[:, None] & m_j[None, :]
        p_x = p_xproj + ((t * B + o_b) * (D * 4 * H) + d * 4 * H)[:, None] + o_j[None, :]
        b_i, b_f, b_g, b_o, c_new = lstm_forward(
            mm(b_h, w_i, DOT_FP32, PRECISION) + tl.load(p_x, mask=ma, other=0.0).to(tl.float32),
            mm(b_h, w_f, DOT_FP32, PRECISION) + tl.load(p_x + H, mask=ma, other=0.0).to(tl.float32),
            mm(b_h, w_g, DOT_FP32, PRECISION) + tl.load(p_x + 2 * H, mask=ma, other=0.0).to(tl.float32),
            mm(b_h, w_o, DOT_FP32, PRECISION) + tl.load(p_x + 3 * H, mask=ma, other=0.0).to(tl.float32),
            b_c)
        h_new = b_o * tanh(c_new)
        p_w = p_ws + (((d * T + t) * B + o_b) * (5 * H))[:, None] + o_j[None, :]
        tl.store(p_w, b_i, mask=ma)
        tl.store(p_w + H, b_f, mask=ma)
        tl.store(p_w + 2 * H, b_g, mask=ma)
        tl.store(p_w + 3 * H, b_o, mask=ma)
        tl.store(p_w + 4 * H, c_new, mask=ma)
        p_out = p_y + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
        tl.store(p_out, h_new.to(p_y.dtype.element_ty), mask=ma)
        b_h = tl.where(active[:, None], h_new, b_h)     # finished rows keep their state
        b_c = tl.where(active[:, None], c_new, b_c)


@triton.jit
def lstm_persistent_bwd_kernel(
    p_dy, p_dhn, p_dcn, p_whh, p_ws, p_c0, p_dg, p_dc, p_len, T, B, H, D,
    HP: tl.constexpr, BB: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    base = d * 4 * H * H
    w_i = load_square(p_whh, base, o_j, o_j, H, False)                           # [HP(j), HP(k)]
    w_f = load_square(p_whh, base + H * H, o_j, o_j, H, False)
    w_g = load_square(p_whh, base + 2 * H * H, o_j, o_j, H, False)
    w_o = load_square(p_whh, base + 3 * H * H, o_j, o_j, H, False)
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]                           # [BB, HP]
    m = m_row[:, None] & m_j[None, :]
    b_dhn = tl.load(p_dhn + o_state, mask=m, other=0.0).to(tl.float32)
    b_dcn = tl.load(p_dcn + o_state, mask=m, other=0.0).to(tl.float32)
    b_c0 = tl.load(p_c0 + o_state, mask=m, other=0.0).to(tl.float32)
    rec = tl.zeros([BB, HP], tl.float32)     # Σ_g dG_g(step s+1) @ W_g, per row
    b_dc = tl.zeros([BB, HP], tl.float32)
    for s_back in range(0, n_steps):
        s = n_steps - 1 - s_back
        active, t, t_prev = step_times(s, d, lens, m_row)
        last = (s == lens - 1)[:, None]
        ma = active[:, None] & m_j[None, :]
        b_dy = tl.load(p_dy + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :], mask=ma,
                       other=0.0).to(tl.float32)
        b_dh = b_dy + tl.where(last, b_dhn, rec)
        b_dc_in = tl.where(last, b_dcn, b_dc)
        p_w = p_ws + (((d * T + t) * B + o_b) * (5 * H))[:, None] + o_j[None, :]
        b_i = tl.load(p_w, mask=ma, other=0.0)
        b_f = tl.load(p_w + H, mask=ma, other=0.0)
        b_g = tl.load(p_w + 2 * H, mask=ma, other=0.0)
        b_o = tl.load(p_w + 3 * H, mask=ma, other=0.0)
        b_tc = tanh(tl.load(p_w + 4 * H, mask=ma, other=0.0))
        p_cp = p_ws + (((d * T + t_prev) * B + o_b) * (5 * H) + 4 * H)[:, None] + o_j[None, :]
        after_first = (tl.zeros([BB], tl.int32) + s) > 0      # a row vector: a mask, not a scalar
        b_c_prev = tl.where(after_first[:, None],
                            tl.load(p_cp, mask=ma & after_first[:, None], other=0.0), b_c0)

        g_i, g_f, g_g, g_o, b_dct = lstm_backward(b_dh, b_dc_in, b_i, b_f, b_g, b_o, b_tc,
                                                  b_c_prev)
        p_g = p_dg + (((d * T + t) * B + o_b) * (4 * H))[:, None] + o_j[None, :]
        tl.store(p_g, g_i, mask=ma)
        tl.store(p_g + H, g_f, mask=ma)
        tl.store(p_g + 2 * H, g_g, mask=ma)
        tl.store(p_g + 3 * H, g_o, mask=ma)
        rec_new = (mm(g_i, w_i, DOT_FP32, PRECISION) + mm(g_f, w_f, DOT_FP32, PRECISION)
                   + mm(g_g, w_g, DOT_FP32, PRECISION) + mm(g_o, w_o, DOT_FP32, PRECISION))
        rec = tl.where(active[:, None], rec_new, rec)
        b_dc = tl.where(active[:, None], b_dct * b_f, b_dc)
    tl.store(p_dc + o_state, b_dc, mask=m)


# ---------------------------------------------------------------------------------- launchers

def forward(xproj, w_hh, b_hh, h0, c0, lens, n_active, y, ws):
    """One launch over all steps; same outputs as ``lstm_step.forward``."""
    D, T, B, _ = ws.shape
    H = w_hh.shape[2]
    dot_fp32, precision = dot_mode(w_hh.dtype)
    if B:
        lstm_persistent_fwd_kernel[(triton.cdiv(B, BB), D)](
            xproj, w_hh, h0, c0, y, ws, lens, T, B, H, D,
            HP=padded_hidden(H), BB=BB, DOT_FP32=dot_fp32, PRECISION=precision,
            num_warps=NUM_WARPS,
        )


def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc):
    """One launch over all steps; same outputs as ``lstm_step.backward``."""
    D, T, B, _ = ws.shape
    H = w_hh.shape[2]
    dot_fp32, precision = dot_mode(w_hh.dtype, backward=True)
    dg = alloc((D, T, B, 4 * H))
    dc = torch.zeros((D, B, H), dtype=torch.float32, device=ws.device)
    if B:
        lstm_persistent_bwd_kernel[(triton.cdiv(B, BB), D)](
            dy, dh_n, dc_n, w_hh, ws, c0, dg, dc, lens, T, B, H, D,
            HP=padded_hidden(H), BB=BB, DOT_FP32=dot_fp32, PRECISION=precision,
            num_warps=NUM_WARPS,
        )
    return {"dg_in": dg, "dg_hid": dg, "dh_carry": None, "dc": dc}
