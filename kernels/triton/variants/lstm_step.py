"""LSTM and LayerNorm LSTM variants (zoneout, resets), step family: per step one GEMM for the
recurrent product and one Triton row kernel for everything elementwise and row-wise.

Dimension legend: see ``step_common`` (T, B, D, H, HP, G=4, N=4H, BB). Workspace columns and
launcher interface: ``layout``.

Why rows: the LayerNorm cell normalises each row over all 4H gate pre-activations (and c' over
H), which the classic step kernel (a program owns a hidden tile of every row) cannot reduce
without a second pass. Here a program owns BB whole rows, so

* **LN statistics** (mean, biased variance → rstd over the 4H gates, and over H for c') are
  in-register row reductions (``row_sum``) over the four [BB, HP] gate blocks, two-pass
  (mean first, then Σ(x − μ)²), in fp32;
* the **LN backward** needs two row means (of dn and dn ⊙ n) over the same width: the same
  reductions, in the same program, then ``ln_grad`` per block;
* per-row gain/bias gradients (``dgain_hh``, ``dgain_c``, ``dbias_c``) accumulate over time in
  [D, B, ·] buffers only this row's program touches; the host sums them over B.

Forward at step s (all directions at once):
    rec      = h_state[:, :n] @ W_hhᵀ                       torch.bmm, fp32 [D, n, 4H]
    row kernel:  a   = xproj + (LN(rec) ⊙ γ_hh or rec)      (xproj holds b_ih + b_hh)
                 c'  = σ(a_f) c_in + σ(a_i) tanh(a_g)       ĉ = LN(c')   c_out = ĉ γ_c + β_c
                 h'  = σ(a_o) tanh(c_out)                   h_t = k h_in + (1 − k) h'  (zoneout)
                 y[t] = h_t;  ws[t] = i f g o c' (ĉ n_hh rstd_hh rstd_c)
                 state for step s+1 = (h0, c0) where it starts afresh, else (h_t, c')
Backward from s = T − 1 down (carried: dh_carry = k ⊙ dh_t and dc_carry = ∂L/∂c_in of step
s + 1, and rec_dh = dg_hid(s + 1) @ W_hh from the GEMM after that step's kernel):
    dh_t = dy[t] + (last ? dh_n : starts(s+1) ? 0 : dh_carry + rec_dh)
    dc'  = (last ? dc_n : starts(s+1) ? 0 : dc_carry) + ∂h'/∂c' part (through the cell LN)
    da   = gate backward;  dg_in = da;  dg_hid = LN backward of da ⊙ γ_hh (or da)
    steps that start from (h0, c0) add k ⊙ dh_t to dh0_direct and dc' f to dc0
    rec_dh = dg_hid(s)[:, :n] @ W_hh                        torch.bmm, fp32 [D, n, H]
"""

import torch
import triton
import triton.language as tl

from . import layout
from .step_common import (accumulate, hand_on, incoming_dh, ln_grad, ln_rstd,
                          next_step_starts, row_blocks, row_sum, row_tile, sigmoid, tanh)

GATES = 4


@triton.jit
def lstm_variant_fwd_rows(
    b_tile, d,                              # row tile, direction
    p_rec, s_rec,                           # [D, n, 4H] fp32, direction stride
    p_xproj, p_lnhh, p_lncw, p_lncb,        # [T, B, D*4H]; [D, 4H]; [D, H]; [D, H]
    p_hs, p_cs, p_h0, p_c0,                 # carried state [D, B, H] fp32; h0, c0 [D, B, H]
    p_starts, p_keep,                       # [D, T, B] uint8; [D, T, B, H] fp32
    p_y, p_ws, p_len, s, n_active, T, B, H, D, W,
    LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr, EPS: tl.constexpr,
    BB: tl.constexpr, HP: tl.constexpr,
):
    d, o_b, m_b, t, _, t_next, last, o_j, m = row_tile(
        b_tile, d, s, p_len, n_active, H, BB, HP)
    N = 4 * H
    m_j = (o_j < H)[None, :]                                                     # [1, HP]
    o_r = (d * s_rec + o_b * N)[:, None] + o_j[None, :]                          # [BB, HP]
    r_i = tl.load(p_rec + o_r, mask=m, other=0.0)
    r_f = tl.load(p_rec + o_r + H, mask=m, other=0.0)
    r_g = tl.load(p_rec + o_r + 2 * H, mask=m, other=0.0)
    r_o = tl.load(p_rec + o_r + 3 * H, mask=m, other=0.0)
    o_w = ((d * T + t) * B + o_b) * W                                            # [BB]
    p_w = p_ws + o_w[:, None] + o_j[None, :]
    if LAYER_NORM:
        # Row statistics over all 4H gates: mean, then Σ (x − μ)² (two passes, in registers).
        mu = (row_sum(r_i, m) + row_sum(r_f, m) + row_sum(r_g, m) + row_sum(r_o, m)) / N
        r_i = r_i - mu[:, None]
        r_f = r_f - mu[:, None]
        r_g = r_g - mu[:, None]
        r_o = r_o - mu[:, None]
        sq = (row_sum(r_i * r_i, m) + row_sum(r_f * r_f, m) + row_sum(r_g * r_g, m)
              + row_sum(r_o * r_o, m))
        rstd = ln_rstd(sq, N, EPS)                                               # [BB]
        r_i = r_i * rstd[:, None]
        r_f = r_f * rstd[:, None]
        r_g = r_g * rstd[:, None]
        r_o = r_o * rstd[:, None]
        tl.store(p_w + 6 * H, r_i, mask=m)                                       # n_hh
        tl.store(p_w + 7 * H, r_f, mask=m)
        tl.store(p_w + 8 * H, r_g, mask=m)
        tl.store(p_w + 9 * H, r_o, mask=m)
        tl.store(p_ws + o_w + 10 * H, rstd, mask=m_b)
        p_gain = p_lnhh + d * N + o_j[None, :]
        r_i = r_i * tl.load(p_gain, mask=m_j, other=0.0).to(tl.float32)
        r_f = r_f * tl.load(p_gain + H, mask=m_j, other=0.0).to(tl.float32)
        r_g = r_g * tl.load(p_gain + 2 * H, mask=m_j, other=0.0).to(tl.float32)
        r_o = r_o * tl.load(p_gain + 3 * H, mask=m_j, other=0.0).to(tl.float32)
    p_x = p_xproj + ((t * B + o_b) * (D * N) + d * N)[:, None] + o_j[None, :]
    b_i = sigmoid(r_i + tl.load(p_x, mask=m, other=0.0))
    b_f = sigmoid(r_f + tl.load(p_x + H, mask=m, other=0.0))
    b_g = tanh(r_g + tl.load(p_x + 2 * H, mask=m, other=0.0))
    b_o = sigmoid(r_o + tl.load(p_x + 3 * H, mask=m, other=0.0))

    o_st = (d * B + o_b)[:, None] * H + o_j[None, :]                             # [BB, HP]
    b_hin = tl.load(p_hs + o_st, mask=m, other=0.0)
    b_cin = tl.load(p_cs + o_st, mask=m, other=0.0)
    b_c = b_f * b_cin + b_i * b_g                                                # c'
    tl.store(p_w, b_i, mask=m)
    tl.store(p_w + H, b_f, mask=m)
    tl.store(p_w + 2 * H, b_g, mask=m)
    tl.store(p_w + 3 * H, b_o, mask=m)
    tl.store(p_w + 4 * H, b_c, mask=m)
    if LAYER_NORM:
        # Cell-state LayerNorm over H, same two-pass row statistics.
        mu_c = row_sum(b_c, m) / H
        b_ch = tl.where(m, b_c - mu_c[:, None], 0.0)
        rstd_c = ln_rstd(row_sum(b_ch * b_ch, m), H, EPS)
        b_ch = b_ch * rstd_c[:, None]                                            # ĉ
        tl.store(p_w + 5 * H, b_ch, mask=m)
        tl.store(p_ws + o_w + 10 * H + 1, rstd_c, mask=m_b)
        b_cout = (b_ch * tl.load(p_lncw + d * H + o_j[None, :], mask=m_j, other=0.0).to(tl.float32)
                  + tl.load(p_lncb + d * H + o_j[None, :], mask=m_j, other=0.0).to(tl.float32))
    else:
        b_cout = b_c
    b_h = b_o * tanh(b_cout)                                                     # h'
    if ZONEOUT:
        b_k = tl.load(p_keep + ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :], mask=m,
                      other=0.0)
        b_h = b_k * b_hin + (1.0 - b_k) * b_h
    tl.store(p_y + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :],
             b_h.to(p_y.dtype.element_ty), mask=m)

    # The state step s + 1 begins from: (h0, c0) where it starts afresh.
    m_next, st_next = next_step_starts(p_starts, d, T, B, o_b, t_next, m_b, last)
    hand_on(p_hs, p_h0, o_st, m_next, st_next, b_h, m_j)
    hand_on(p_cs, p_c0, o_st, m_next, st_next, b_c, m_j)


@triton.jit
def lstm_variant_bwd_rows(
    b_tile, d,                              # row tile, direction
    p_rdh, s_rdh,                           # dg_hid(s + 1) @ W_hh, [D, n', H] fp32, d stride
    p_dy, p_dhn, p_dcn,                     # [T, B, D*H]; [D, B, H]; [D, B, H]
    p_ws, p_lnhh, p_lncw, p_lncb, p_c0,     # [D, T, B, W]; [D, 4H]; [D, H]; [D, H]; [D, B, H]
    p_starts, p_keep,                       # [D, T, B] uint8; [D, T, B, H] fp32
    p_dhc, p_dcc, p_dh0, p_dc0,             # carries and h0/c0 gradients, [D, B, H] fp32
    p_dgin, p_dghid, p_dgs,                 # [D, T, B, 4H]; [D, T, B, 4H]; this step [D, B, 4H]
    p_dgain, p_dgc, p_dbc,                  # per-row LN accumulators [D, B, 4H]; [D, B, H] x2
    p_len, s, n_active, T, B, H, D, W,
    LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr,
    BB: tl.constexpr, HP: tl.constexpr,
):
    d, o_b, m_b, t, t_prev, t_next, last, o_j, m = row_tile(
        b_tile, d, s, p_len, n_active, H, BB, HP)
    N = 4 * H
    m_j = (o_j < H)[None, :]
    o_st = (d * B + o_b)[:, None] * H + o_j[None, :]                             # [BB, HP]
    b_last = last[:, None]

    # What the future sends back: nothing across a step that starts afresh.
    m_next, st_next = next_step_starts(p_starts, d, T, B, o_b, t_next, m_b, last)
    m_carry = (m_next & (st_next == 0))[:, None] & m_j
    b_dh = incoming_dh(p_dy, p_dhn, p_dhc, p_rdh, s_rdh, d, t, B, D, H, o_b, o_j, o_st, m,
                       m_carry, last)                                            # ∂L/∂h_t
    b_dc = tl.where(b_last, tl.load(p_dcn + o_st, mask=m & b_last, other=0.0).to(tl.float32),
                    tl.load(p_dcc + o_st, mask=m_carry, other=0.0))              # from c' onward

    st = tl.load(p_starts + (d * T + t) * B + o_b, mask=m_b, other=0) != 0        # [BB]
    m_st = m & st[:, None]
    if ZONEOUT:   # h_t = k h_in + (1 − k) h'
        b_k = tl.load(p_keep + ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :], mask=m,
                      other=0.0)
        b_direct = b_k * b_dh                                                    # → h_in
        b_dh = (1.0 - b_k) * b_dh                                                # → h'
        tl.store(p_dhc + o_st, b_direct, mask=m)
        accumulate(p_dh0, o_st, m_st, b_direct)

    o_w = ((d * T + t) * B + o_b) * W                                            # [BB]
    p_w = p_ws + o_w[:, None] + o_j[None, :]
    b_i = tl.load(p_w, mask=m, other=0.0)
    b_f = tl.load(p_w + H, mask=m, other=0.0)
    b_g = tl.load(p_w + 2 * H, mask=m, other=0.0)
    b_o = tl.load(p_w + 3 * H, mask=m, other=0.0)
    if LAYER_NORM:
        b_ch = tl.load(p_w + 5 * H, mask=m, other=0.0)                           # ĉ
        rstd_c = tl.load(p_ws + o_w + 10 * H + 1, mask=m_b, other=0.0)
        b_gc = tl.load(p_lncw + d * H + o_j[None, :], mask=m_j, other=0.0).to(tl.float32)
        b_cout = b_ch * b_gc + tl.load(p_lncb + d * H + o_j[None, :], mask=m_j,
                                       other=0.0).to(tl.float32)
    else:
        b_cout = tl.load(p_w + 4 * H, mask=m, other=0.0)
    b_tc = tanh(b_cout)
    b_do = b_dh * b_tc
    b_dcout = b_dh * b_o * (1.0 - b_tc * b_tc)
    if LAYER_NORM:
        accumulate(p_dbc, o_st, m, b_dcout)
        accumulate(p_dgc, o_st, m, b_dcout * b_ch)
        b_dn = b_dcout * b_gc
        b_dc += ln_grad(b_dn, b_ch, rstd_c, row_sum(b_dn, m) / H, row_sum(b_dn * b_ch, m) / H)
    else:
        b_dc += b_dcout

    # c_in: c0 where this step starts afresh, else c' of the step before.
    b_cin = tl.where(st[:, None], tl.load(p_c0 + o_st, mask=m_st, other=0.0).to(tl.float32),
                     tl.load(p_ws + ((d * T + t_prev) * B + o_b)[:, None] * W + 4 * H
                             + o_j[None, :], mask=m & (st == 0)[:, None], other=0.0))
    b_dcin = b_dc * b_f
    tl.store(p_dcc + o_st, b_dcin, mask=m)
    accumulate(p_dc0, o_st, m_st, b_dcin)

    da_i = b_dc * b_g * b_i * (1.0 - b_i)
    da_f = b_dc * b_cin * b_f * (1.0 - b_f)
    da_g = b_dc * b_i * (1.0 - b_g * b_g)
    da_o = b_do * b_o * (1.0 - b_o)
    o_g = ((d * T + t) * B + o_b)[:, None] * N + o_j[None, :]                    # [BB, HP]
    tl.store(p_dgin + o_g, da_i, mask=m)
    tl.store(p_dgin + o_g + H, da_f, mask=m)
    tl.store(p_dgin + o_g + 2 * H, da_g, mask=m)
    tl.store(p_dgin + o_g + 3 * H, da_o, mask=m)
    if LAYER_NORM:
        # a = xproj + n_hh ⊙ γ_hh, n_hh = LN(rec): backward through the gain, then the LN
        # (two row means over all 4H columns).
        n_i = tl.load(p_w + 6 * H, mask=m, other=0.0)
        n_f = tl.load(p_w + 7 * H, mask=m, other=0.0)
        n_g = tl.load(p_w + 8 * H, mask=m, other=0.0)
        n_o = tl.load(p_w + 9 * H, mask=m, other=0.0)
        rstd = tl.load(p_ws + o_w + 10 * H, mask=m_b, other=0.0)
        o_a = (d * B + o_b)[:, None] * N + o_j[None, :]
        accumulate(p_dgain, o_a, m, da_i * n_i)
        accumulate(p_dgain, o_a + H, m, da_f * n_f)
        accumulate(p_dgain, o_a + 2 * H, m, da_g * n_g)
        accumulate(p_dgain, o_a + 3 * H, m, da_o * n_o)
        p_gain = p_lnhh + d * N + o_j[None, :]
        da_i = da_i * tl.load(p_gain, mask=m_j, other=0.0).to(tl.float32)
        da_f = da_f * tl.load(p_gain + H, mask=m_j, other=0.0).to(tl.float32)
        da_g = da_g * tl.load(p_gain + 2 * H, mask=m_j, other=0.0).to(tl.float32)
        da_o = da_o * tl.load(p_gain + 3 * H, mask=m_j, other=0.0).to(tl.float32)
        mean_dn = (row_sum(da_i, m) + row_sum(da_f, m) + row_sum(da_g, m) + row_sum(da_o, m)) / N
        mean_dnn = (row_sum(da_i * n_i, m) + row_sum(da_f * n_f, m) + row_sum(da_g * n_g, m)
                    + row_sum(da_o * n_o, m)) / N
        da_i = ln_grad(da_i, n_i, rstd, mean_dn, mean_dnn)
        da_f = ln_grad(da_f, n_f, rstd, mean_dn, mean_dnn)
        da_g = ln_grad(da_g, n_g, rstd, mean_dn, mean_dnn)
        da_o = ln_grad(da_o, n_o, rstd, mean_dn, mean_dnn)
        tl.store(p_dghid + o_g, da_i, mask=m)
        tl.store(p_dghid + o_g + H, da_f, mask=m)
        tl.store(p_dghid + o_g + 2 * H, da_g, mask=m)
        tl.store(p_dghid + o_g + 3 * H, da_o, mask=m)
    # This step's dg_hid, compact by row, for the GEMM that hands it to step s − 1.
    o_s = (d * B + o_b)[:, None] * N + o_j[None, :]
    tl.store(p_dgs + o_s, da_i, mask=m)
    tl.store(p_dgs + o_s + H, da_f, mask=m)
    tl.store(p_dgs + o_s + 2 * H, da_g, mask=m)
    tl.store(p_dgs + o_s + 3 * H, da_o, mask=m)


@triton.jit(do_not_specialize=["s", "n_active"])
def lstm_variant_fwd_kernel(
    p_rec, s_rec, p_xproj, p_lnhh, p_lncw, p_lncb, p_hs, p_cs, p_h0, p_c0, p_starts, p_keep,
    p_y, p_ws, p_len, s, n_active, T, B, H, D, W, LAYER_NORM: tl.constexpr,
    ZONEOUT: tl.constexpr, EPS: tl.constexpr, BB: tl.constexpr, HP: tl.constexpr,
):
    """Grid (row tiles, D): one program per tile of ``lstm_variant_fwd_rows``."""
    lstm_variant_fwd_rows(
        tl.program_id(0), tl.program_id(1), p_rec, s_rec, p_xproj, p_lnhh,
        p_lncw, p_lncb, p_hs, p_cs, p_h0, p_c0, p_starts, p_keep, p_y, p_ws, p_len, s,
        n_active, T, B, H, D, W, LAYER_NORM, ZONEOUT, EPS, BB, HP)


@triton.jit(do_not_specialize=["s", "n_active"])
def lstm_variant_bwd_kernel(
    p_rdh, s_rdh, p_dy, p_dhn, p_dcn, p_ws, p_lnhh, p_lncw, p_lncb, p_c0, p_starts, p_keep,
    p_dhc, p_dcc, p_dh0, p_dc0, p_dgin, p_dghid, p_dgs, p_dgain, p_dgc, p_dbc, p_len, s,
    n_active, T, B, H, D, W, LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr, BB: tl.constexpr,
    HP: tl.constexpr,
):
    """Grid (row tiles, D): one program per tile of ``lstm_variant_bwd_rows``."""
    lstm_variant_bwd_rows(
        tl.program_id(0), tl.program_id(1), p_rdh, s_rdh, p_dy, p_dhn, p_dcn,
        p_ws, p_lnhh, p_lncw, p_lncb, p_c0, p_starts, p_keep, p_dhc, p_dcc, p_dh0, p_dc0,
        p_dgin, p_dghid, p_dgs, p_dgain, p_dgc, p_dbc, p_len, s, n_active, T, B, H, D, W,
        LAYER_NORM, ZONEOUT, BB, HP)


def forward(xproj, w_hh, b_hh, ln, h0, c0, starts, keep, lens, n_active, y, ws):
    """See ``layout``. ``b_hh`` is unused (the LSTM's is in xproj)."""
    T, B = xproj.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("LSTM", ln is not None, H)["W"]
    assert ws.shape[-1] == W, (ws.shape, W)
    BB, HP = row_blocks(H)
    w_t = w_hh.float().transpose(1, 2)                                           # [D, H, 4H]
    hs = h0.float().clone()                                                      # carried h
    cs = c0.float().clone()                                                      # carried c
    st8 = starts.to(torch.uint8).contiguous()
    lncw = layout.lstm_ln_operands(ln, xproj)
    keep_p = keep if keep is not None else xproj
    for s in range(T):
        n = n_active[s]
        if n == 0:
            continue
        rec = torch.bmm(hs[:, :n], w_t)                                          # [D, n, 4H]
        lstm_variant_fwd_kernel[(triton.cdiv(n, BB), D)](
            rec, n * N, xproj, *lncw, hs, cs, h0, c0, st8, keep_p, y, ws, lens, s, n, T, B, H,
            D, W, LAYER_NORM=ln is not None, ZONEOUT=keep is not None, EPS=layout.LN_EPS,
            BB=BB, HP=HP)


def backward(dy, dh_n, dc_n, w_hh, b_hh, ln, ws, y, h0, c0, starts, keep, lens, n_active, alloc):
    """See ``layout``: the dict of gradients."""
    T, B = dy.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("LSTM", ln is not None, H)["W"]
    BB, HP = row_blocks(H)

    def zeros(*shape):
        return torch.zeros(shape, dtype=torch.float32, device=dy.device)

    dg_in = alloc((D, T, B, N))
    dg_hid = alloc((D, T, B, N)) if ln is not None else dg_in
    dg_step = zeros(D, B, N)
    dh_carry, dc_carry, dh0, dc0 = zeros(D, B, H), zeros(D, B, H), zeros(D, B, H), zeros(D, B, H)
    dgain, dgc, dbc = (zeros(D, B, N), zeros(D, B, H), zeros(D, B, H)) if ln is not None \
        else (dg_step, dg_step, dg_step)
    if dc_n is None:
        dc_n = zeros(D, B, H)
    w32 = w_hh.float()
    st8 = starts.to(torch.uint8).contiguous()
    lncw = layout.lstm_ln_operands(ln, dg_step)
    keep_p = keep if keep is not None else dg_step
    rec, s_rec = dg_step, 0                         # no step after the last: never read
    for s in range(T - 1, -1, -1):
        n = n_active[s]
        if n == 0:
            continue
        lstm_variant_bwd_kernel[(triton.cdiv(n, BB), D)](
            rec, s_rec, dy, dh_n, dc_n, ws, *lncw, c0, st8, keep_p, dh_carry, dc_carry, dh0,
            dc0, dg_in, dg_hid, dg_step, dgain, dgc, dbc, lens, s, n, T, B, H, D, W,
            LAYER_NORM=ln is not None, ZONEOUT=keep is not None, BB=BB, HP=HP)
        if s > 0:
            rec, s_rec = torch.bmm(dg_step[:, :n], w32), n * H                   # [D, n, H]
    has_ln = ln is not None
    return {"dg_in": dg_in, "dg_hid": dg_hid, "dh0_direct": dh0, "dc0": dc0,
            "dgain_hh": dgain if has_ln else None, "db_hh": None,
            "dgain_c": dgc if has_ln else None, "dbias_c": dbc if has_ln else None}
