"""LSTM and LayerNorm LSTM variants (zoneout, resets), hidden-split persistent form: one launch
for the whole sequence at any hidden size (``"triton-persistent"`` past the batch-tiled
variant kernels' ``MAX_HIDDEN``).

Dimension legend: see ``split_common`` of this folder (T, B, D, H, HP, G = 4, N = 4H, BB, NJ,
BBG, BH, BK). Workspace columns and launcher interface: ``layout``.

Program (j, d), forward, for s = 0 … max(len) − 1:
    recurrent_product: rec[:, :, slice j of every gate] = h_state @ W_hhᵀ     (all rows)
    barrier
    row tiles j, j + NJ, …: ``lstm_step.lstm_variant_fwd_rows``   (LN over 4H and over H in
                            registers; y, ws, and the state step s + 1 begins from)
    barrier
Backward, s = max(len) − 1 … 0:
    row tiles j, j + NJ, …: ``lstm_step.lstm_variant_bwd_rows``   (dg_in, dg_hid, dg_step, the
                            carries, dh0_direct, dc0, the LN gain/bias rows)
    s > 0: barrier; recurrent_product_back: dh_rec[:, :, slice j] = dg_step @ W_hh; barrier
"""

import torch
import triton.language as tl
import triton

from . import layout
from ..split_common import grid_barrier, split_program
from .lstm_step import GATES, lstm_variant_bwd_rows, lstm_variant_fwd_rows
from .split_common import launch, recurrent_product, recurrent_product_back


@triton.jit
def lstm_variant_persistent_split_fwd_kernel(
    p_xproj, p_whh, p_lnhh, p_lncw, p_lncb,     # [T, B, D*4H]; [D, 4H, H]; [D, 4H]; [D, H] x2
    p_hs, p_cs, p_h0, p_c0,                     # carried state [D, B, H] fp32; h0, c0
    p_starts, p_keep,                           # [D, T, B] u8; [D, T, B, H] fp32
    p_rec, s_rec,                               # [D, B, 4H] fp32, its direction stride
    p_y, p_ws, p_len, p_nact, p_bar, n_steps, T, B, H, D, W, s_begin, s_end,
    LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr, EPS: tl.constexpr,
    BB: tl.constexpr, HP: tl.constexpr, BBG: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, PHASES: tl.constexpr,
):
    j, d, p_bar, n_programs = split_program(p_bar)
    d = d.to(tl.int64)
    sense = 0
    for s in range(s_begin, s_end):
        n_act = tl.load(p_nact + s)
        if PHASES & 1:
            recurrent_product(p_hs, p_whh, p_rec, d, j, n_act, B, H, 4, BBG, BH, BK, DOT_FP32,
                              PRECISION)
        if PHASES == 3:
            sense = grid_barrier(p_bar, n_programs, sense)
        if PHASES & 2:
            for b_tile in range(j, tl.cdiv(n_act, BB), n_programs):
                lstm_variant_fwd_rows(
                    b_tile, d, p_rec, s_rec, p_xproj, p_lnhh, p_lncw, p_lncb, p_hs, p_cs, p_h0,
                    p_c0, p_starts, p_keep, p_y, p_ws, p_len, s, n_act, T, B, H, D, W,
                    LAYER_NORM, ZONEOUT, EPS, BB, HP)
        if PHASES == 3:
            sense = grid_barrier(p_bar, n_programs, sense)


@triton.jit
def lstm_variant_persistent_split_bwd_kernel(
    p_dy, p_dhn, p_dcn, p_whh, p_ws,            # [T, B, D*H]; [D, B, H] x2; [D, 4H, H]; ws
    p_lnhh, p_lncw, p_lncb, p_c0,               # [D, 4H]; [D, H] x2; [D, B, H]
    p_starts, p_keep,                           # [D, T, B] u8; [D, T, B, H] fp32
    p_rdh, s_rdh,                               # dg_step @ W_hh [D, B, H] fp32, d stride
    p_dhc, p_dcc, p_dh0, p_dc0,                 # carries, h0/c0 gradients [D, B, H] fp32
    p_dgin, p_dghid, p_dgs,                     # [D, T, B, 4H] x2; this step [D, B, 4H]
    p_dgain, p_dgc, p_dbc,                      # per-row LN accumulators [D, B, 4H]; [D, B, H] x2
    p_len, p_nact, p_bar, n_steps, T, B, H, D, W, s_begin, s_end,
    LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr,
    BB: tl.constexpr, HP: tl.constexpr, BBG: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, PHASES: tl.constexpr,
):
    j, d, p_bar, n_programs = split_program(p_bar)
    d = d.to(tl.int64)
    sense = 0
    for s_back in range(s_begin, s_end):
        s = n_steps - 1 - s_back
        n_act = tl.load(p_nact + s)
        if PHASES & 2:
            for b_tile in range(j, tl.cdiv(n_act, BB), n_programs):
                lstm_variant_bwd_rows(
                    b_tile, d, p_rdh, s_rdh, p_dy, p_dhn, p_dcn, p_ws, p_lnhh, p_lncw, p_lncb,
                    p_c0, p_starts, p_keep, p_dhc, p_dcc, p_dh0, p_dc0, p_dgin, p_dghid, p_dgs,
                    p_dgain, p_dgc, p_dbc, p_len, s, n_act, T, B, H, D, W, LAYER_NORM, ZONEOUT,
                    BB, HP)
        if s > 0:
            if PHASES == 3:
                sense = grid_barrier(p_bar, n_programs, sense)
            if PHASES & 1:
                recurrent_product_back(p_dgs, p_whh, p_rdh, d, j, n_act, B, H, 4, BBG, BH, BK,
                                       DOT_FP32, PRECISION)
            if PHASES == 3:
                sense = grid_barrier(p_bar, n_programs, sense)


# ---------------------------------------------------------------------------------- launchers

def forward(xproj, w_hh, b_hh, ln, h0, c0, starts, keep, lens, n_active, y, ws):
    """See ``layout``. ``b_hh`` is unused (the LSTM's is in xproj)."""
    T, B = xproj.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("LSTM", ln is not None, H)["W"]
    assert ws.shape[-1] == W, (ws.shape, W)
    hs, cs = h0.float().clone(), c0.float().clone()                              # carried state
    rec = torch.zeros((D, B, N), dtype=torch.float32, device=xproj.device)
    launch(lstm_variant_persistent_split_fwd_kernel, w_hh, lens, n_active,
           (xproj, w_hh.contiguous(), *layout.lstm_ln_operands(ln, xproj), hs, cs, h0, c0,
            starts.to(torch.uint8).contiguous(), keep if keep is not None else xproj,
            rec, rec.stride(0), y, ws, lens, T, B, H, D, W),
           dict(LAYER_NORM=ln is not None, ZONEOUT=keep is not None, EPS=layout.LN_EPS),
           backward=False)


def backward(dy, dh_n, dc_n, w_hh, b_hh, ln, ws, y, h0, c0, starts, keep, lens, n_active, alloc):
    """See ``layout``: the dict of gradients."""
    T, B = dy.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("LSTM", ln is not None, H)["W"]

    def zeros(*shape):
        return torch.zeros(shape, dtype=torch.float32, device=dy.device)

    has_ln = ln is not None
    dg_in = alloc((D, T, B, N))
    dg_hid = alloc((D, T, B, N)) if has_ln else dg_in
    dg_step, dh_rec = zeros(D, B, N), zeros(D, B, H)
    dh_carry, dc_carry, dh0, dc0 = zeros(D, B, H), zeros(D, B, H), zeros(D, B, H), zeros(D, B, H)
    dgain, dgc, dbc = (zeros(D, B, N), zeros(D, B, H), zeros(D, B, H)) if has_ln \
        else (dg_step, dg_step, dg_step)
    if dc_n is None:
        dc_n = zeros(D, B, H)
    launch(lstm_variant_persistent_split_bwd_kernel, w_hh, lens, n_active,
           (dy, dh_n, dc_n, w_hh.contiguous(), ws, *layout.lstm_ln_operands(ln, dg_step),
            c0, starts.to(torch.uint8).contiguous(), keep if keep is not None else dg_step,
            dh_rec, dh_rec.stride(0), dh_carry, dc_carry, dh0, dc0, dg_in, dg_hid, dg_step,
            dgain, dgc, dbc, lens, T, B, H, D, W),
           dict(LAYER_NORM=has_ln, ZONEOUT=keep is not None), backward=True)
    return {"dg_in": dg_in, "dg_hid": dg_hid, "dh0_direct": dh0, "dc0": dc0,
            "dgain_hh": dgain if has_ln else None, "db_hh": None,
            "dgain_c": dgc if has_ln else None, "dbias_c": dbc if has_ln else None}
