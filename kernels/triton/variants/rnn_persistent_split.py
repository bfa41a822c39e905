"""Elman RNN variants (resets, zoneout; tanh or relu), hidden-split persistent form: one launch
for the whole sequence at any hidden size (``lstm_persistent_split``'s structure; without
LayerNorm nothing here needs whole rows, but the shared two-phase form keeps one row body, the
step family's, for every variant).

Dimension legend: see ``split_common`` of this folder (T, B, D, H, HP, G = 1, BB, NJ, BBG, BH,
BK). Workspace columns and launcher interface: ``layout``.

Program (j, d), forward, for s = 0 … max(len) − 1:
    recurrent_product (slice j, all rows); barrier; row tiles j, j + NJ, …:
    ``rnn_step.rnn_variant_fwd_rows``; barrier
Backward, s = max(len) − 1 … 0:
    row tiles j, j + NJ, …: ``rnn_step.rnn_variant_bwd_rows``;
    s > 0: barrier; recurrent_product_back (slice j); barrier
"""

from types import SimpleNamespace

import torch
import triton.language as tl
import triton

from . import layout
from ..split_common import grid_barrier, split_program
from .rnn_step import GATES, rnn_variant_bwd_rows, rnn_variant_fwd_rows
from .split_common import launch, recurrent_product, recurrent_product_back


@triton.jit
def rnn_variant_persistent_split_fwd_kernel(
    p_xproj, p_whh, p_hs, p_h0,                 # [T, B, D*H]; [D, H, H]; carried [D, B, H]; h0
    p_starts, p_keep,                           # [D, T, B] u8; [D, T, B, H] fp32
    p_rec, s_rec,                               # [D, B, H] fp32, its direction stride
    p_y, p_ws, p_len, p_nact, p_bar, n_steps, T, B, H, D, s_begin, s_end,
    RELU: tl.constexpr, ZONEOUT: tl.constexpr,
    BB: tl.constexpr, HP: tl.constexpr, BBG: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, PHASES: tl.constexpr,
):
    j, d, p_bar, n_programs = split_program(p_bar)
    d = d.to(tl.int64)
    sense = 0
    for s in range(s_begin, s_end):
        n_act = tl.load(p_nact + s)
        if PHASES & 1:
            recurrent_product(p_hs, p_whh, p_rec, d, j, n_act, B, H, 1, BBG, BH, BK, DOT_FP32,
                              PRECISION)
        if PHASES == 3:
            sense = grid_barrier(p_bar, n_programs, sense)
        if PHASES & 2:
            for b_tile in range(j, tl.cdiv(n_act, BB), n_programs):
                rnn_variant_fwd_rows(
                    b_tile, d, p_rec, s_rec, p_xproj, p_hs, p_h0, p_starts, p_keep, p_y, p_ws,
                    p_len, s, n_act, T, B, H, D, RELU, ZONEOUT, BB, HP)
        if PHASES == 3:
            sense = grid_barrier(p_bar, n_programs, sense)


@triton.jit
def rnn_variant_persistent_split_bwd_kernel(
    p_dy, p_dhn, p_whh, p_ws,                   # [T, B, D*H]; [D, B, H]; [D, H, H]; ws
    p_starts, p_keep,                           # [D, T, B] u8; [D, T, B, H] fp32
    p_rdh, s_rdh,                               # dg_step @ W_hh [D, B, H] fp32, d stride
    p_dhc, p_dh0, p_dg, p_dgs,                  # [D, B, H] x2; [D, T, B, H]; this step [D, B, H]
    p_len, p_nact, p_bar, n_steps, T, B, H, D, s_begin, s_end,
    RELU: tl.constexpr, ZONEOUT: tl.constexpr,
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
                rnn_variant_bwd_rows(
                    b_tile, d, p_rdh, s_rdh, p_dy, p_dhn, p_ws, p_starts, p_keep, p_dhc, p_dh0,
                    p_dg, p_dgs, p_len, s, n_act, T, B, H, D, RELU, ZONEOUT, BB, HP)
        if s > 0:
            if PHASES == 3:
                sense = grid_barrier(p_bar, n_programs, sense)
            if PHASES & 1:
                recurrent_product_back(p_dgs, p_whh, p_rdh, d, j, n_act, B, H, 1, BBG, BH, BK,
                                       DOT_FP32, PRECISION)
            if PHASES == 3:
                sense = grid_barrier(p_bar, n_programs, sense)


# ---------------------------------------------------------------------------------- launchers

def _forward(relu, xproj, w_hh, b_hh, ln, h0, c0, starts, keep, lens, n_active, y, ws):
    """See ``layout``; ``b_hh`` (in xproj), ``ln`` and ``c0`` are unused."""
    T, B = xproj.shape[:2]
    D, H, _ = w_hh.shape
    assert ws.shape[-1] == layout.columns("RNN_TANH", False, H)["W"]
    hs = h0.float().clone()
    rec = torch.zeros((D, B, H), dtype=torch.float32, device=xproj.device)
    launch(rnn_variant_persistent_split_fwd_kernel, w_hh, lens, n_active,
           (xproj, w_hh.contiguous(), hs, h0, starts.to(torch.uint8).contiguous(),
            keep if keep is not None else xproj, rec, rec.stride(0), y, ws, lens, T, B, H, D),
           dict(RELU=relu, ZONEOUT=keep is not None), backward=False)


def _backward(relu, dy, dh_n, dc_n, w_hh, b_hh, ln, ws, y, h0, c0, starts, keep, lens, n_active,
              alloc):
    T, B = dy.shape[:2]
    D, H, _ = w_hh.shape

    def zeros(*shape):
        return torch.zeros(shape, dtype=torch.float32, device=dy.device)

    dg = alloc((D, T, B, H))
    dg_step, dh_rec, dh_carry, dh0 = zeros(D, B, H), zeros(D, B, H), zeros(D, B, H), zeros(D, B, H)
    launch(rnn_variant_persistent_split_bwd_kernel, w_hh, lens, n_active,
           (dy, dh_n, w_hh.contiguous(), ws, starts.to(torch.uint8).contiguous(),
            keep if keep is not None else dg_step, dh_rec, dh_rec.stride(0), dh_carry, dh0, dg,
            dg_step, lens, T, B, H, D),
           dict(RELU=relu, ZONEOUT=keep is not None), backward=True)
    return {"dg_in": dg, "dg_hid": dg, "dh0_direct": dh0, "dc0": None, "dgain_hh": None,
            "db_hh": None, "dgain_c": None, "dbias_c": None}


def _activation(relu):
    return SimpleNamespace(
        GATES=GATES,
        forward=lambda *a: _forward(relu, *a),
        backward=lambda *a: _backward(relu, *a))


TANH = _activation(False)
RELU = _activation(True)
