"""Elman RNN variants (resets, zoneout; tanh or relu), step family: per step one GEMM for the
recurrent product and one Triton row kernel for the rest (``lstm_step``'s structure; no
LayerNorm, so nothing here needs whole rows, but sharing the family keeps one host path).

Dimension legend: see ``step_common`` (T, B, D, H, HP, G=1, BB). Workspace: ``layout`` (h', the
activation before zoneout, which the backward's derivative needs: with zoneout, y holds the
blended state instead).

Forward at step s:
    rec = h_state[:, :n] @ W_hhᵀ                     torch.bmm, fp32 [D, n, H]
    row kernel:  h' = act(xproj + rec)   (xproj holds b_ih + b_hh)
                 h_t = k h_in + (1 − k) h'  (zoneout);  y[t] = h_t;  ws[t] = h'
                 state for step s + 1 = h0 where it starts afresh, else h_t
Backward from s = T − 1 down (carried: dh_carry = k ⊙ dh_t of step s + 1, rec_dh =
dg(s + 1) @ W_hh):
    dh_t = dy[t] + (last ? dh_n : starts(s+1) ? 0 : dh_carry + rec_dh)
    dg   = (1 − k) dh_t ⊙ act'(h');   steps that start from h0 add k ⊙ dh_t to dh0_direct
"""

from types import SimpleNamespace

import torch
import triton
import triton.language as tl

from . import layout
from .step_common import hand_on, incoming_dh, next_step_starts, row_blocks, row_tile, tanh

GATES = 1


@triton.jit
def rnn_variant_fwd_rows(
    b_tile, d,                              # row tile, direction
    p_rec, s_rec,                           # [D, n, H] fp32, direction stride
    p_xproj, p_hs, p_h0,                    # [T, B, D*H]; carried state [D, B, H] fp32; h0
    p_starts, p_keep,                       # [D, T, B] uint8; [D, T, B, H] fp32
    p_y, p_ws, p_len, s, n_active, T, B, H, D,
    RELU: tl.constexpr, ZONEOUT: tl.constexpr, BB: tl.constexpr, HP: tl.constexpr,
):
    d, o_b, m_b, t, _, t_next, last, o_j, m = row_tile(
        b_tile, d, s, p_len, n_active, H, BB, HP)
    a = (tl.load(p_rec + (d * s_rec + o_b * H)[:, None] + o_j[None, :], mask=m, other=0.0)
         + tl.load(p_xproj + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :], mask=m,
                   other=0.0).to(tl.float32))
    b_h = tl.maximum(a, 0.0) if RELU else tanh(a)                                # h'
    tl.store(p_ws + (((d * T + t) * B + o_b) * H)[:, None] + o_j[None, :], b_h, mask=m)
    o_st = (d * B + o_b)[:, None] * H + o_j[None, :]                             # [BB, HP]
    if ZONEOUT:
        b_k = tl.load(p_keep + ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :], mask=m,
                      other=0.0)
        b_h = b_k * tl.load(p_hs + o_st, mask=m, other=0.0) + (1.0 - b_k) * b_h
    tl.store(p_y + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :],
             b_h.to(p_y.dtype.element_ty), mask=m)
    # The state step s + 1 begins from (in place: rec was computed before the launch).
    m_next, st_next = next_step_starts(p_starts, d, T, B, o_b, t_next, m_b, last)
    hand_on(p_hs, p_h0, o_st, m_next, st_next, b_h, (o_j < H)[None, :])


@triton.jit
def rnn_variant_bwd_rows(
    b_tile, d,                              # row tile, direction
    p_rdh, s_rdh,                           # dg(s + 1) @ W_hh, [D, n', H] fp32, d stride
    p_dy, p_dhn, p_ws, p_starts, p_keep,    # [T, B, D*H]; [D, B, H]; [D, T, B, H]; ...
    p_dhc, p_dh0,                           # carry and h0 gradient, [D, B, H] fp32
    p_dg, p_dgs,                            # [D, T, B, H]; this step, compact [D, B, H]
    p_len, s, n_active, T, B, H, D,
    RELU: tl.constexpr, ZONEOUT: tl.constexpr, BB: tl.constexpr, HP: tl.constexpr,
):
    d, o_b, m_b, t, _, t_next, last, o_j, m = row_tile(
        b_tile, d, s, p_len, n_active, H, BB, HP)
    m_j = (o_j < H)[None, :]
    o_st = (d * B + o_b)[:, None] * H + o_j[None, :]
    m_next, st_next = next_step_starts(p_starts, d, T, B, o_b, t_next, m_b, last)
    m_carry = (m_next & (st_next == 0))[:, None] & m_j
    b_dh = incoming_dh(p_dy, p_dhn, p_dhc, p_rdh, s_rdh, d, t, B, D, H, o_b, o_j, o_st, m,
                       m_carry, last)                                            # ∂L/∂h_t
    if ZONEOUT:
        b_k = tl.load(p_keep + ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :], mask=m,
                      other=0.0)
        b_direct = b_k * b_dh
        b_dh = (1.0 - b_k) * b_dh
        tl.store(p_dhc + o_st, b_direct, mask=m)
        st = tl.load(p_starts + (d * T + t) * B + o_b, mask=m_b, other=0) != 0
        m_st = m & st[:, None]
        tl.store(p_dh0 + o_st, tl.load(p_dh0 + o_st, mask=m_st, other=0.0) + b_direct, mask=m_st)
    b_h = tl.load(p_ws + (((d * T + t) * B + o_b) * H)[:, None] + o_j[None, :], mask=m, other=0.0)
    b_dg = tl.where(b_h > 0.0, b_dh, 0.0) if RELU else b_dh * (1.0 - b_h * b_h)
    tl.store(p_dg + (((d * T + t) * B + o_b) * H)[:, None] + o_j[None, :], b_dg, mask=m)
    tl.store(p_dgs + o_st, b_dg, mask=m)


@triton.jit(do_not_specialize=["s", "n_active"])
def rnn_variant_fwd_kernel(
    p_rec, s_rec, p_xproj, p_hs, p_h0, p_starts, p_keep, p_y, p_ws, p_len, s, n_active, T, B,
    H, D, RELU: tl.constexpr, ZONEOUT: tl.constexpr, BB: tl.constexpr, HP: tl.constexpr,
):
    """Grid (row tiles, D): one program per tile of ``rnn_variant_fwd_rows``."""
    rnn_variant_fwd_rows(
        tl.program_id(0), tl.program_id(1), p_rec, s_rec, p_xproj, p_hs, p_h0,
        p_starts, p_keep, p_y, p_ws, p_len, s, n_active, T, B, H, D, RELU, ZONEOUT, BB, HP)


@triton.jit(do_not_specialize=["s", "n_active"])
def rnn_variant_bwd_kernel(
    p_rdh, s_rdh, p_dy, p_dhn, p_ws, p_starts, p_keep, p_dhc, p_dh0, p_dg, p_dgs, p_len, s,
    n_active, T, B, H, D, RELU: tl.constexpr, ZONEOUT: tl.constexpr, BB: tl.constexpr,
    HP: tl.constexpr,
):
    """Grid (row tiles, D): one program per tile of ``rnn_variant_bwd_rows``."""
    rnn_variant_bwd_rows(
        tl.program_id(0), tl.program_id(1), p_rdh, s_rdh, p_dy, p_dhn, p_ws,
        p_starts, p_keep, p_dhc, p_dh0, p_dg, p_dgs, p_len, s, n_active, T, B, H, D, RELU,
        ZONEOUT, BB, HP)


def _forward(relu, xproj, w_hh, b_hh, ln, h0, c0, starts, keep, lens, n_active, y, ws):
    """See ``layout``; ``b_hh`` (in xproj), ``ln`` and ``c0`` are unused."""
    T, B = xproj.shape[:2]
    D, H, _ = w_hh.shape
    assert ws.shape[-1] == layout.columns("RNN_TANH", False, H)["W"]
    BB, HP = row_blocks(H)
    w_t = w_hh.float().transpose(1, 2)
    hs = h0.float().clone()
    st8 = starts.to(torch.uint8).contiguous()
    keep_p = keep if keep is not None else xproj
    for s in range(T):
        n = n_active[s]
        if n == 0:
            continue
        rec = torch.bmm(hs[:, :n], w_t)                                          # [D, n, H]
        rnn_variant_fwd_kernel[(triton.cdiv(n, BB), D)](
            rec, n * H, xproj, hs, h0, st8, keep_p, y, ws, lens, s, n, T, B, H, D,
            RELU=relu, ZONEOUT=keep is not None, BB=BB, HP=HP)


def _backward(relu, dy, dh_n, dc_n, w_hh, b_hh, ln, ws, y, h0, c0, starts, keep, lens, n_active,
              alloc):
    T, B = dy.shape[:2]
    D, H, _ = w_hh.shape
    BB, HP = row_blocks(H)

    def zeros(*shape):
        return torch.zeros(shape, dtype=torch.float32, device=dy.device)

    dg = alloc((D, T, B, H))
    dg_step, dh_carry, dh0 = zeros(D, B, H), zeros(D, B, H), zeros(D, B, H)
    w32 = w_hh.float()
    st8 = starts.to(torch.uint8).contiguous()
    keep_p = keep if keep is not None else dg_step
    rec, s_rec = dg_step, 0
    for s in range(T - 1, -1, -1):
        n = n_active[s]
        if n == 0:
            continue
        rnn_variant_bwd_kernel[(triton.cdiv(n, BB), D)](
            rec, s_rec, dy, dh_n, ws, st8, keep_p, dh_carry, dh0, dg, dg_step, lens, s, n, T, B,
            H, D, RELU=relu, ZONEOUT=keep is not None, BB=BB, HP=HP)
        if s > 0:
            rec, s_rec = torch.bmm(dg_step[:, :n], w32), n * H
    return {"dg_in": dg, "dg_hid": dg, "dh0_direct": dh0, "dc0": None, "dgain_hh": None,
            "db_hh": None, "dgain_c": None, "dbias_c": None}


def _activation(relu):
    return SimpleNamespace(
        GATES=GATES,
        forward=lambda *a: _forward(relu, *a),
        backward=lambda *a: _backward(relu, *a))


TANH = _activation(False)
RELU = _activation(True)
