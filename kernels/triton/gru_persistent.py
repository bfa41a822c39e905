"""GRU, batch-tiled persistent form: one launch for the whole sequence, forward and backward.

Dimension legend: see ``persistent_common`` (T, B, D, H, HP, BB; G = 3).

Forward with W_hh and h in registers (gate order r z n, reset after the matmul):
    gh_g = h @ W_hh[d, g]ᵀ      r = σ(x_r + gh_r)   z = σ(x_z + gh_z)
    ghn  = gh_n + b_hn          n = tanh(x_n + r ghn)     h' = (1 - z) n + z h
Backward, carrying ``rec = Σ_g dGh_g(s+1) @ W_hh[d, g] + dh(s+1) z(s+1)`` in registers; the
gate backward is ``gru_step``'s. Workspace and gradient layouts are ``gru_step``'s, and the
``carry`` output ends as the direct term ``dh z`` of step 0, as the shared host side expects.
"""

import torch
import triton
import triton.language as tl

from .launch_common import dot_mode
from .persistent_common import load_square, mm, padded_hidden, step_times, tile_rows
from .cell_math import gru_backward, gru_forward
from .gru_step import GATES, WORKSPACE_COLUMNS, split_biases  # noqa: F401  (same layouts)

# 3 register tiles of HP×HP; measured as in lstm_persistent (ptxas, sm_90, 8 warps). TF32 and
# bf16: HP=64 fits (≤ 237 registers), HP=128 spills 72–264 bytes. IEEE fp32: HP=64 forward
# spills 256 bytes; HP=32 fits (99/126). fp16: HP=64 backward spills 8 bytes; HP=32 fits.
MAX_HIDDEN = {"fp32-tf32": 64, "fp32-ieee": 32, "fp16": 32, "bf16": 64}
NUM_WARPS = 8
BB = 16


@triton.jit
def gru_persistent_fwd_kernel(
    p_xproj, p_whh, p_bhn, p_h0, p_y, p_ws, p_len, T, B, H, D,
    HAS_BHN: tl.constexpr, HP: tl.constexpr, BB: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    base = d * 3 * H * H
    w_r = load_square(p_whh, base, o_j, o_j, H, True)                            # [HP(k), HP(j)]
    w_z = load_square(p_whh, base + H * H, o_j, o_j, H, True)
    w_n = load_square(p_whh, base + 2 * H * H, o_j, o_j, H, True)
    b_hn = tl.zeros([HP], tl.float32)
    if HAS_BHN:
        b_hn = tl.load(p_bhn + d * H + o_j, mask=m_j, other=0.0).to(tl.float32)
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]
    b_h = tl.load(p_h0 + o_state, mask=m_row[:, None] & m_j[None, :], other=0.0).to(tl.float32)
    for s in range(0, n_steps):
        active, t, _ = step_times(s, d, lens, m_row)
        ma = active[:, None] & m_j[None, :]
        p_x = p_xproj + ((t * B + o_b) * (D * 3 * H) + d * 3 * H)[:, None] + o_j[None, :]
        b_ghn = mm(b_h, w_n, DOT_FP32, PRECISION) + b_hn[None, :]
        b_r, b_z, b_n, h_new = gru_forward(
            tl.load(p_x, mask=ma, other=0.0).to(tl.float32),
            tl.load(p_x + H, mask=ma, other=0.0).to(tl.float32),
            tl.load(p_x + 2 * H, mask=ma, other=0.0).to(tl.float32),
            mm(b_h, w_r, DOT_FP32, PRECISION), mm(b_h, w_z, DOT_FP32, PRECISION), b_ghn, b_h)
        p_w = p_ws + (((d * T + t) * B + o_b) * (4 * H))[:, None] + o_j[None, :]
        tl.store(p_w, b_r, mask=ma)
        tl.store(p_w + H, b_z, mask=ma)
        tl.store(p_w + 2 * H, b_n, mask=ma)
        tl.store(p_w + 3 * H, b_ghn, mask=ma)
        p_out = p_y + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
        tl.store(p_out, h_new.to(p_y.dtype.element_ty), mask=ma)
        b_h = tl.where(active[:, None], h_new, b_h)


@triton.jit
def gru_persistent_bwd_kernel(
    p_dy, p_dhn, p_whh, p_ws, p_y, p_h0, p_dgi, p_dgh, p_carry, p_len, T, B, H, D,
    HP: tl.constexpr, BB: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    base = d * 3 * H * H
    w_r = load_square(p_whh, base, o_j, o_j, H, False)                           # [HP(j), HP(k)]
    w_z = load_square(p_whh, base + H * H, o_j, o_j, H, False)
    w_n = load_square(p_whh, base + 2 * H * H, o_j, o_j, H, False)
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]
    m = m_row[:, None] & m_j[None, :]
    b_dhn = tl.load(p_dhn + o_state, mask=m, other=0.0).to(tl.float32)
    b_h0 = tl.load(p_h0 + o_state, mask=m, other=0.0).to(tl.float32)
    rec = tl.zeros([BB, HP], tl.float32)
    for s_back in range(0, n_steps):
        s = n_steps - 1 - s_back
        active, t, t_prev = step_times(s, d, lens, m_row)
        last = (s == lens - 1)[:, None]
        ma = active[:, None] & m_j[None, :]
        o_y = ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
        b_dh = tl.load(p_dy + o_y, mask=ma, other=0.0).to(tl.float32) + tl.where(last, b_dhn, rec)
        p_w = p_ws + (((d * T + t) * B + o_b) * (4 * H))[:, None] + o_j[None, :]
        b_r = tl.load(p_w, mask=ma, other=0.0)
        b_z = tl.load(p_w + H, mask=ma, other=0.0)
        b_n = tl.load(p_w + 2 * H, mask=ma, other=0.0)
        b_ghn = tl.load(p_w + 3 * H, mask=ma, other=0.0)
        after_first = (tl.zeros([BB], tl.int32) + s) > 0      # a row vector: a mask, not a scalar
        o_yp = ((t_prev * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
        b_h_prev = tl.where(after_first[:, None],
                            tl.load(p_y + o_yp, mask=ma & after_first[:, None], other=0.0).to(tl.float32),
                            b_h0)

        g_r, g_z, g_n, direct = gru_backward(b_dh, b_r, b_z, b_n, b_ghn, b_h_prev)
        o_g = (((d * T + t) * B + o_b) * (3 * H))[:, None] + o_j[None, :]
        tl.store(p_dgi + o_g, g_r, mask=ma)
        tl.store(p_dgi + o_g + H, g_z, mask=ma)
        tl.store(p_dgi + o_g + 2 * H, g_n, mask=ma)
        tl.store(p_dgh + o_g, g_r, mask=ma)
        tl.store(p_dgh + o_g + H, g_z, mask=ma)
        tl.store(p_dgh + o_g + 2 * H, g_n * b_r, mask=ma)
        tl.store(p_carry + o_state, direct, mask=ma)       # the value of step 0 remains
        rec_new = (mm(g_r, w_r, DOT_FP32, PRECISION) + mm(g_z, w_z, DOT_FP32, PRECISION)
                   + mm(g_n * b_r, w_n, DOT_FP32, PRECISION) + direct)
        rec = tl.where(active[:, None], rec_new, rec)


# ---------------------------------------------------------------------------------- launchers

def forward(xproj, w_hh, b_hn, h0, c0, lens, n_active, y, ws):
    """One launch over all steps; same outputs as ``gru_step.forward``."""
    D, T, B, _ = ws.shape
    H = w_hh.shape[2]
    dot_fp32, precision = dot_mode(w_hh.dtype)
    if B:
        gru_persistent_fwd_kernel[(triton.cdiv(B, BB), D)](
            xproj, w_hh, w_hh if b_hn is None else b_hn, h0, y, ws, lens, T, B, H, D,
            HAS_BHN=b_hn is not None, HP=padded_hidden(H), BB=BB, DOT_FP32=dot_fp32,
            PRECISION=precision, num_warps=NUM_WARPS,
        )


def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc):
    """One launch over all steps; same outputs as ``gru_step.backward``."""
    D, T, B, _ = ws.shape
    H = w_hh.shape[2]
    dot_fp32, precision = dot_mode(w_hh.dtype, backward=True)
    dgi, dgh = alloc((D, T, B, 3 * H)), alloc((D, T, B, 3 * H))
    carry = torch.zeros((D, B, H), dtype=torch.float32, device=ws.device)
    if B:
        gru_persistent_bwd_kernel[(triton.cdiv(B, BB), D)](
            dy, dh_n, w_hh, ws, y, h0, dgi, dgh, carry, lens, T, B, H, D,
            HP=padded_hidden(H), BB=BB, DOT_FP32=dot_fp32, PRECISION=precision,
            num_warps=NUM_WARPS,
        )
    return {"dg_in": dgi, "dg_hid": dgh, "dh_carry": carry, "dc": None}
