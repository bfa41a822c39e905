"""GRU and LayerNorm GRU variants (zoneout, resets), hidden-split persistent form: one launch
for the whole sequence at any hidden size (``lstm_persistent_split``'s structure and reasons).

Dimension legend: see ``split_common`` of this folder (T, B, D, H, HP, G = 3, N = 3H, BB, NJ,
BBG, BH, BK). Workspace columns and launcher interface: ``layout``.

Program (j, d), forward, for s = 0 … max(len) − 1:
    recurrent_product: rec[:, :, slice j of r, z, n] = h_state @ W_hhᵀ         (all rows)
    barrier
    row tiles j, j + NJ, …: ``gru_step.gru_variant_fwd_rows``    (LN over 3H in registers, b_hh,
                            gates, zoneout; y, ws, and the state step s + 1 begins from)
    barrier
Backward, s = max(len) − 1 … 0:
    row tiles j, j + NJ, …: ``gru_step.gru_variant_bwd_rows``
    s > 0: barrier; recurrent_product_back: dh_rec[:, :, slice j] = dg_step @ W_hh; barrier
"""

import torch
import triton.language as tl
import triton

from . import layout
from ..split_common import grid_barrier, split_program
from .gru_step import GATES, gru_variant_bwd_rows, gru_variant_fwd_rows  # noqa: F401
from .split_common import launch, recurrent_product, recurrent_product_back


@triton.jit
def gru_variant_persistent_split_fwd_kernel(
    p_xproj, p_whh, p_bhh, p_lnhh,              # [T, B, D*3H]; [D, 3H, H]; [D, 3H]; [D, 3H]
    p_hs, p_h0, p_starts, p_keep,               # carried [D, B, H] fp32; h0; u8; keep
    p_rec, s_rec,                               # [D, B, 3H] fp32, its direction stride
    p_y, p_ws, p_len, p_nact, p_bar, n_steps, T, B, H, D, W, s_begin, s_end,
    HAS_BIAS: tl.constexpr, LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr, EPS: tl.constexpr,
    BB: tl.constexpr, HP: tl.constexpr, BBG: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, PHASES: tl.constexpr,
):
    j, d, p_bar, n_programs = split_program(p_bar)
    d = d.to(tl.int64)
    sense = 0
    for s in range(s_begin, s_end):
        n_act = tl.load(p_nact + s)
        if PHASES & 1:
            recurrent_product(p_hs, p_whh, p_rec, d, j, n_act, B, H, 3, BBG, BH, BK, DOT_FP32,
                              PRECISION)
        if PHASES == 3:
            sense = grid_barrier(p_bar, n_programs, sense)
        if PHASES & 2:
            for b_tile in range(j, tl.cdiv(n_act, BB), n_programs):
                gru_variant_fwd_rows(
                    b_tile, d, p_rec, s_rec, p_xproj, p_bhh, p_lnhh, p_hs, p_h0, p_starts,
                    p_keep, p_y, p_ws, p_len, s, n_act, T, B, H, D, W, HAS_BIAS, LAYER_NORM,
                    ZONEOUT, EPS, BB, HP)
        if PHASES == 3:
            sense = grid_barrier(p_bar, n_programs, sense)


@triton.jit
def gru_variant_persistent_split_bwd_kernel(
    p_dy, p_dhn, p_whh, p_ws, p_y, p_h0, p_lnhh,  # [T, B, D*H]; [D, B, H]; [D, 3H, H]; ...
    p_starts, p_keep,                           # [D, T, B] u8; [D, T, B, H] fp32
    p_rdh, s_rdh,                               # dg_step @ W_hh [D, B, H] fp32, d stride
    p_dhc, p_dh0,                               # carry, h0 gradient [D, B, H] fp32
    p_dgin, p_dghid, p_dgs,                     # [D, T, B, 3H] x2; this step [D, B, 3H]
    p_dbhh, p_dgain,                            # per-row accumulators [D, B, 3H]
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
                gru_variant_bwd_rows(
                    b_tile, d, p_rdh, s_rdh, p_dy, p_dhn, p_ws, p_y, p_h0, p_lnhh, p_starts,
                    p_keep, p_dhc, p_dh0, p_dgin, p_dghid, p_dgs, p_dbhh, p_dgain, p_len, s,
                    n_act, T, B, H, D, W, LAYER_NORM, ZONEOUT, BB, HP)
        if s > 0:
            if PHASES == 3:
                sense = grid_barrier(p_bar, n_programs, sense)
            if PHASES & 1:
                recurrent_product_back(p_dgs, p_whh, p_rdh, d, j, n_act, B, H, 3, BBG, BH, BK,
                                       DOT_FP32, PRECISION)
            if PHASES == 3:
                sense = grid_barrier(p_bar, n_programs, sense)


# ---------------------------------------------------------------------------------- launchers

def forward(xproj, w_hh, b_hh, ln, h0, c0, starts, keep, lens, n_active, y, ws):
    """See ``layout``; ``c0`` is unused."""
    T, B = xproj.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("GRU", ln is not None, H)["W"]
    assert ws.shape[-1] == W, (ws.shape, W)
    hs = h0.float().clone()                                                      # carried state
    rec = torch.zeros((D, B, N), dtype=torch.float32, device=xproj.device)
    launch(gru_variant_persistent_split_fwd_kernel, w_hh, lens, n_active,
           (xproj, w_hh.contiguous(), b_hh if b_hh is not None else xproj,
            ln["ln_hh"] if ln is not None else xproj, hs, h0, starts.to(torch.uint8).contiguous(),
            keep if keep is not None else xproj, rec, rec.stride(0), y, ws, lens, T, B, H, D,
            W),
           dict(HAS_BIAS=b_hh is not None, LAYER_NORM=ln is not None, ZONEOUT=keep is not None,
                EPS=layout.LN_EPS), backward=False)


def backward(dy, dh_n, dc_n, w_hh, b_hh, ln, ws, y, h0, c0, starts, keep, lens, n_active, alloc):
    """See ``layout``: the dict of gradients."""
    T, B = dy.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("GRU", ln is not None, H)["W"]

    def zeros(*shape):
        return torch.zeros(shape, dtype=torch.float32, device=dy.device)

    dg_in, dg_hid = alloc((D, T, B, N)), alloc((D, T, B, N))
    dg_step, db_hh, dh_rec = zeros(D, B, N), zeros(D, B, N), zeros(D, B, H)
    dgain = zeros(D, B, N) if ln is not None else dg_step
    dh_carry, dh0 = zeros(D, B, H), zeros(D, B, H)
    launch(gru_variant_persistent_split_bwd_kernel, w_hh, lens, n_active,
           (dy, dh_n, w_hh.contiguous(), ws, y, h0,
            ln["ln_hh"] if ln is not None else dg_step, starts.to(torch.uint8).contiguous(),
            keep if keep is not None else dg_step, dh_rec, dh_rec.stride(0), dh_carry, dh0,
            dg_in, dg_hid, dg_step, db_hh, dgain, lens, T, B, H, D, W),
           dict(LAYER_NORM=ln is not None, ZONEOUT=keep is not None), backward=True)
    return {"dg_in": dg_in, "dg_hid": dg_hid, "dh0_direct": dh0, "dc0": None,
            "dgain_hh": dgain if ln is not None else None, "db_hh": db_hh,
            "dgain_c": None, "dbias_c": None}
