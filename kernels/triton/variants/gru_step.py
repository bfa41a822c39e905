"""GRU and LayerNorm GRU variants (zoneout, resets), step family: per step one GEMM for the
recurrent product and one Triton row kernel (``lstm_step``'s structure and reasons).

Dimension legend: see ``step_common`` (T, B, D, H, HP, G=3, N=3H, BB). Workspace columns and
launcher interface: ``layout``. The LN statistics over all 3H gates of the recurrent product are
in-register row reductions over the three [BB, HP] gate blocks a row program owns (two-pass,
fp32), and so are the two row means of the LN backward.

Forward at step s:
    rec  = h_state[:, :n] @ W_hhᵀ                               torch.bmm, fp32 [D, n, 3H]
    row kernel:  a_h = (LN(rec) ⊙ γ_hh or rec) + b_hh           (b_hh stays here: r ⊙ a_hn)
                 r = σ(x_r + a_hr)  z = σ(x_z + a_hz)  n = tanh(x_n + r ⊙ a_hn)   (xproj has b_ih)
                 h' = (1 − z) n + z h_in;  h_t = k h_in + (1 − k) h'  (zoneout);  y[t] = h_t
                 ws[t] = r z n a_hn (n_hh rstd_hh);  state for s + 1 = h0 where it starts afresh
Backward from s = T − 1 down (carried: dh_carry = the elementwise part of ∂L/∂h_in of step
s + 1, i.e. k ⊙ dh + (1 − k) z ⊙ dh, and rec_dh = dg_hid(s + 1) @ W_hh):
    dh_t = dy[t] + (last ? dh_n : starts(s+1) ? 0 : dh_carry + rec_dh)
    dh'  = (1 − k) dh_t;  dn = dh' (1 − z);  dz = dh' (h_in − n);  direct = k dh_t + z dh'
    da_n = dn (1 − n²);  da_hn = da_n r;  dr = da_n a_hn
    dg_in = (dr σ'(r), dz σ'(z), da_n);  da_h = (dr σ'(r), dz σ'(z), da_hn) → db_hh per row
    dg_hid = LN backward of da_h ⊙ γ_hh (or da_h);  steps from h0 add direct to dh0_direct
"""

import torch
import triton
import triton.language as tl

from . import layout
from .step_common import (accumulate, hand_on, incoming_dh, ln_grad, ln_rstd,
                          next_step_starts, row_blocks, row_sum, row_tile, sigmoid, tanh)

GATES = 3


@triton.jit
def gru_variant_fwd_rows(
    b_tile, d,                              # row tile, direction
    p_rec, s_rec,                           # [D, n, 3H] fp32, direction stride
    p_xproj, p_bhh, p_lnhh,                 # [T, B, D*3H]; [D, 3H]; [D, 3H]
    p_hs, p_h0, p_starts, p_keep,           # carried [D, B, H] fp32; h0; [D, T, B] u8; keep
    p_y, p_ws, p_len, s, n_active, T, B, H, D, W,
    HAS_BIAS: tl.constexpr, LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr,
    EPS: tl.constexpr, BB: tl.constexpr, HP: tl.constexpr,
):
    d, o_b, m_b, t, _, t_next, last, o_j, m = row_tile(
        b_tile, d, s, p_len, n_active, H, BB, HP)
    N = 3 * H
    m_j = (o_j < H)[None, :]
    o_r = (d * s_rec + o_b * N)[:, None] + o_j[None, :]
    r_r = tl.load(p_rec + o_r, mask=m, other=0.0)
    r_z = tl.load(p_rec + o_r + H, mask=m, other=0.0)
    r_n = tl.load(p_rec + o_r + 2 * H, mask=m, other=0.0)
    o_w = ((d * T + t) * B + o_b) * W
    p_w = p_ws + o_w[:, None] + o_j[None, :]
    if LAYER_NORM:
        mu = (row_sum(r_r, m) + row_sum(r_z, m) + row_sum(r_n, m)) / N
        r_r = r_r - mu[:, None]
        r_z = r_z - mu[:, None]
        r_n = r_n - mu[:, None]
        rstd = ln_rstd(row_sum(r_r * r_r, m) + row_sum(r_z * r_z, m) + row_sum(r_n * r_n, m),
                       N, EPS)
        r_r = r_r * rstd[:, None]
        r_z = r_z * rstd[:, None]
        r_n = r_n * rstd[:, None]
        tl.store(p_w + 4 * H, r_r, mask=m)                                       # n_hh
        tl.store(p_w + 5 * H, r_z, mask=m)
        tl.store(p_w + 6 * H, r_n, mask=m)
        tl.store(p_ws + o_w + 7 * H, rstd, mask=m_b)
        p_gain = p_lnhh + d * N + o_j[None, :]
        r_r = r_r * tl.load(p_gain, mask=m_j, other=0.0).to(tl.float32)
        r_z = r_z * tl.load(p_gain + H, mask=m_j, other=0.0).to(tl.float32)
        r_n = r_n * tl.load(p_gain + 2 * H, mask=m_j, other=0.0).to(tl.float32)
    if HAS_BIAS:
        p_b = p_bhh + d * N + o_j[None, :]
        r_r += tl.load(p_b, mask=m_j, other=0.0).to(tl.float32)
        r_z += tl.load(p_b + H, mask=m_j, other=0.0).to(tl.float32)
        r_n += tl.load(p_b + 2 * H, mask=m_j, other=0.0).to(tl.float32)          # a_hn
    p_x = p_xproj + ((t * B + o_b) * (D * N) + d * N)[:, None] + o_j[None, :]
    b_r = sigmoid(r_r + tl.load(p_x, mask=m, other=0.0).to(tl.float32))
    b_z = sigmoid(r_z + tl.load(p_x + H, mask=m, other=0.0).to(tl.float32))
    b_n = tanh(tl.load(p_x + 2 * H, mask=m, other=0.0).to(tl.float32) + b_r * r_n)
    o_st = (d * B + o_b)[:, None] * H + o_j[None, :]
    b_hin = tl.load(p_hs + o_st, mask=m, other=0.0)
    b_h = (1.0 - b_z) * b_n + b_z * b_hin                                        # h'
    tl.store(p_w, b_r, mask=m)
    tl.store(p_w + H, b_z, mask=m)
    tl.store(p_w + 2 * H, b_n, mask=m)
    tl.store(p_w + 3 * H, r_n, mask=m)
    if ZONEOUT:
        b_k = tl.load(p_keep + ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :], mask=m,
                      other=0.0)
        b_h = b_k * b_hin + (1.0 - b_k) * b_h
    tl.store(p_y + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :],
             b_h.to(p_y.dtype.element_ty), mask=m)
    m_next, st_next = next_step_starts(p_starts, d, T, B, o_b, t_next, m_b, last)
    hand_on(p_hs, p_h0, o_st, m_next, st_next, b_h, m_j)


@triton.jit
def gru_variant_bwd_rows(
    b_tile, d,                              # row tile, direction
    p_rdh, s_rdh,                           # dg_hid(s + 1) @ W_hh, [D, n', H] fp32
    p_dy, p_dhn, p_ws, p_y, p_h0, p_lnhh,   # [T, B, D*H]; [D, B, H]; ws; y; h0; [D, 3H]
    p_starts, p_keep,                       # [D, T, B] u8; [D, T, B, H] fp32
    p_dhc, p_dh0,                           # carry, h0 gradient [D, B, H] fp32
    p_dgin, p_dghid, p_dgs,                 # [D, T, B, 3H] x2; this step, compact [D, B, 3H]
    p_dbhh, p_dgain,                        # per-row accumulators [D, B, 3H]
    p_len, s, n_active, T, B, H, D, W,
    LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr, BB: tl.constexpr, HP: tl.constexpr,
):
    d, o_b, m_b, t, t_prev, t_next, last, o_j, m = row_tile(
        b_tile, d, s, p_len, n_active, H, BB, HP)
    N = 3 * H
    m_j = (o_j < H)[None, :]
    o_st = (d * B + o_b)[:, None] * H + o_j[None, :]
    m_next, st_next = next_step_starts(p_starts, d, T, B, o_b, t_next, m_b, last)
    m_carry = (m_next & (st_next == 0))[:, None] & m_j
    b_dh = incoming_dh(p_dy, p_dhn, p_dhc, p_rdh, s_rdh, d, t, B, D, H, o_b, o_j, o_st, m,
                       m_carry, last)                                            # ∂L/∂h_t
    st = tl.load(p_starts + (d * T + t) * B + o_b, mask=m_b, other=0) != 0
    m_st = m & st[:, None]
    # h_in: h0 where this step starts afresh, else the state the previous step left (in y).
    b_hin = tl.where(st[:, None], tl.load(p_h0 + o_st, mask=m_st, other=0.0).to(tl.float32),
                     tl.load(p_y + ((t_prev * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :],
                             mask=m & (st == 0)[:, None], other=0.0).to(tl.float32))
    if ZONEOUT:
        b_k = tl.load(p_keep + ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :], mask=m,
                      other=0.0)
        b_direct = b_k * b_dh
        b_dh = (1.0 - b_k) * b_dh                                                # → h'
    else:
        b_direct = tl.zeros([BB, HP], tl.float32)
    o_w = ((d * T + t) * B + o_b) * W
    p_w = p_ws + o_w[:, None] + o_j[None, :]
    b_r = tl.load(p_w, mask=m, other=0.0)
    b_z = tl.load(p_w + H, mask=m, other=0.0)
    b_n = tl.load(p_w + 2 * H, mask=m, other=0.0)
    b_ahn = tl.load(p_w + 3 * H, mask=m, other=0.0)
    b_direct += b_dh * b_z
    tl.store(p_dhc + o_st, b_direct, mask=m)
    accumulate(p_dh0, o_st, m_st, b_direct)
    da_n = b_dh * (1.0 - b_z) * (1.0 - b_n * b_n)
    da_r = da_n * b_ahn * b_r * (1.0 - b_r)
    da_z = b_dh * (b_hin - b_n) * b_z * (1.0 - b_z)
    da_hn = da_n * b_r
    o_g = ((d * T + t) * B + o_b)[:, None] * N + o_j[None, :]
    tl.store(p_dgin + o_g, da_r, mask=m)
    tl.store(p_dgin + o_g + H, da_z, mask=m)
    tl.store(p_dgin + o_g + 2 * H, da_n, mask=m)
    o_a = (d * B + o_b)[:, None] * N + o_j[None, :]
    accumulate(p_dbhh, o_a, m, da_r)
    accumulate(p_dbhh, o_a + H, m, da_z)
    accumulate(p_dbhh, o_a + 2 * H, m, da_hn)
    if LAYER_NORM:
        n_r = tl.load(p_w + 4 * H, mask=m, other=0.0)
        n_z = tl.load(p_w + 5 * H, mask=m, other=0.0)
        n_n = tl.load(p_w + 6 * H, mask=m, other=0.0)
        rstd = tl.load(p_ws + o_w + 7 * H, mask=m_b, other=0.0)
        accumulate(p_dgain, o_a, m, da_r * n_r)
        accumulate(p_dgain, o_a + H, m, da_z * n_z)
        accumulate(p_dgain, o_a + 2 * H, m, da_hn * n_n)
        p_gain = p_lnhh + d * N + o_j[None, :]
        da_r = da_r * tl.load(p_gain, mask=m_j, other=0.0).to(tl.float32)
        da_z = da_z * tl.load(p_gain + H, mask=m_j, other=0.0).to(tl.float32)
        da_hn = da_hn * tl.load(p_gain + 2 * H, mask=m_j, other=0.0).to(tl.float32)
        mean_dn = (row_sum(da_r, m) + row_sum(da_z, m) + row_sum(da_hn, m)) / N
        mean_dnn = (row_sum(da_r * n_r, m) + row_sum(da_z * n_z, m) + row_sum(da_hn * n_n, m)) / N
        da_r = ln_grad(da_r, n_r, rstd, mean_dn, mean_dnn)
        da_z = ln_grad(da_z, n_z, rstd, mean_dn, mean_dnn)
        da_hn = ln_grad(da_hn, n_n, rstd, mean_dn, mean_dnn)
    tl.store(p_dghid + o_g, da_r, mask=m)
    tl.store(p_dghid + o_g + H, da_z, mask=m)
    tl.store(p_dghid + o_g + 2 * H, da_hn, mask=m)
    tl.store(p_dgs + o_a, da_r, mask=m)
    tl.store(p_dgs + o_a + H, da_z, mask=m)
    tl.store(p_dgs + o_a + 2 * H, da_hn, mask=m)


@triton.jit(do_not_specialize=["s", "n_active"])
def gru_variant_fwd_kernel(
    p_rec, s_rec, p_xproj, p_bhh, p_lnhh, p_hs, p_h0, p_starts, p_keep, p_y, p_ws, p_len, s,
    n_active, T, B, H, D, W, HAS_BIAS: tl.constexpr, LAYER_NORM: tl.constexpr,
    ZONEOUT: tl.constexpr, EPS: tl.constexpr, BB: tl.constexpr, HP: tl.constexpr,
):
    """Grid (row tiles, D): one program per tile of ``gru_variant_fwd_rows``."""
    gru_variant_fwd_rows(
        tl.program_id(0), tl.program_id(1), p_rec, s_rec, p_xproj, p_bhh,
        p_lnhh, p_hs, p_h0, p_starts, p_keep, p_y, p_ws, p_len, s, n_active, T, B, H, D, W,
        HAS_BIAS, LAYER_NORM, ZONEOUT, EPS, BB, HP)


@triton.jit(do_not_specialize=["s", "n_active"])
def gru_variant_bwd_kernel(
    p_rdh, s_rdh, p_dy, p_dhn, p_ws, p_y, p_h0, p_lnhh, p_starts, p_keep, p_dhc, p_dh0, p_dgin,
    p_dghid, p_dgs, p_dbhh, p_dgain, p_len, s, n_active, T, B, H, D, W,
    LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr, BB: tl.constexpr, HP: tl.constexpr,
):
    """Grid (row tiles, D): one program per tile of ``gru_variant_bwd_rows``."""
    gru_variant_bwd_rows(
        tl.program_id(0), tl.program_id(1), p_rdh, s_rdh, p_dy, p_dhn, p_ws,
        p_y, p_h0, p_lnhh, p_starts, p_keep, p_dhc, p_dh0, p_dgin, p_dghid, p_dgs, p_dbhh,
        p_dgain, p_len, s, n_active, T, B, H, D, W, LAYER_NORM, ZONEOUT, BB, HP)


def forward(xproj, w_hh, b_hh, ln, h0, c0, starts, keep, lens, n_active, y, ws):
    """See ``layout``; ``c0`` is unused."""
    T, B = xproj.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("GRU", ln is not None, H)["W"]
    assert ws.shape[-1] == W, (ws.shape, W)
    BB, HP = row_blocks(H)
    w_t = w_hh.float().transpose(1, 2)                                           # [D, H, 3H]
    hs = h0.float().clone()
    st8 = starts.to(torch.uint8).contiguous()
    keep_p = keep if keep is not None else xproj
    b_p = b_hh if b_hh is not None else xproj
    ln_p = ln["ln_hh"] if ln is not None else xproj
    for s in range(T):
        n = n_active[s]
        if n == 0:
            continue
        rec = torch.bmm(hs[:, :n], w_t)                                          # [D, n, 3H]
        gru_variant_fwd_kernel[(triton.cdiv(n, BB), D)](
            rec, n * N, xproj, b_p, ln_p, hs, h0, st8, keep_p, y, ws, lens, s, n, T, B, H, D, W,
            HAS_BIAS=b_hh is not None, LAYER_NORM=ln is not None, ZONEOUT=keep is not None,
            EPS=layout.LN_EPS, BB=BB, HP=HP)


def backward(dy, dh_n, dc_n, w_hh, b_hh, ln, ws, y, h0, c0, starts, keep, lens, n_active, alloc):
    """See ``layout``: the dict of gradients."""
    T, B = dy.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("GRU", ln is not None, H)["W"]
    BB, HP = row_blocks(H)

    def zeros(*shape):
        return torch.zeros(shape, dtype=torch.float32, device=dy.device)

    dg_in, dg_hid = alloc((D, T, B, N)), alloc((D, T, B, N))
    dg_step, db_hh = zeros(D, B, N), zeros(D, B, N)
    dgain = zeros(D, B, N) if ln is not None else dg_step
    dh_carry, dh0 = zeros(D, B, H), zeros(D, B, H)
    w32 = w_hh.float()
    st8 = starts.to(torch.uint8).contiguous()
    keep_p = keep if keep is not None else dg_step
    ln_p = ln["ln_hh"] if ln is not None else dg_step
    rec, s_rec = dg_step, 0
    for s in range(T - 1, -1, -1):
        n = n_active[s]
        if n == 0:
            continue
        gru_variant_bwd_kernel[(triton.cdiv(n, BB), D)](
            rec, s_rec, dy, dh_n, ws, y, h0, ln_p, st8, keep_p, dh_carry, dh0, dg_in, dg_hid,
            dg_step, db_hh, dgain, lens, s, n, T, B, H, D, W,
            LAYER_NORM=ln is not None, ZONEOUT=keep is not None, BB=BB, HP=HP)
        if s > 0:
            rec, s_rec = torch.bmm(dg_step[:, :n], w32), n * H                   # [D, n, H]
    return {"dg_in": dg_in, "dg_hid": dg_hid, "dh0_direct": dh0, "dc0": None,
            "dgain_hh": dgain if ln is not None else None, "db_hh": db_hh,
            "dgain_c": None, "dbias_c": None}
