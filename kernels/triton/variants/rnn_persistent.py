"""Elman RNN variants (tanh or relu; resets, zoneout), batch-tiled persistent form: one launch
for the whole sequence, forward and backward (``"triton-persistent"``).

Dimension legend: see ``kernels/triton/persistent_common`` (T, B, D, H, HP, BB; G = 1).
Workspace columns and launcher interface: ``layout`` (shared host
``fusedrnn/backends/triton_variant.py``). No LayerNorm variant exists for the RNN.

A program owns a batch tile and ALL hidden units of one direction; W_hh, h, h0 live in
registers for the whole sequence; dh0_direct accumulates in registers, stored once.

Forward:  h_in = h0 where starts[d, t, b], else the carried state
          h' = act(xproj + h_in W_hhᵀ)   (xproj holds b_ih + b_hh);  ws = h'
          h_t = k h_in + (1 − k) h' (zoneout);  y[t] = h_t
Backward, carrying rec = dG(s+1) @ W_hh and k ⊙ dh(s+1); nothing crosses a step that starts
afresh:   dh_t = dy + (last ? dh_n : cut ? 0 : rec + carry)
          dG = (1 − k) dh_t act'(h');  steps starting from h0 add k ⊙ dh_t to dh0_direct (the
          host adds (Σ_t starts ⊙ dG) @ W_hh: layout.py's split)
"""

from types import SimpleNamespace

import torch
import triton
import triton.language as tl

from ..cell_math import rnn_activation, rnn_activation_grad
from ..launch_common import dot_mode
from ..persistent_common import load_square, mm, padded_hidden, step_times, tile_rows

GATES = 1
# Register budget (one HP × HP tile of W_hh), measured with ptxas for sm_90 at 8 warps with
# zoneout on (kept checked by tests/test_variant_ptx_compile.py): HP=64 fits for TF32, fp16,
# bf16 (≤ 179 registers); IEEE fp32 at HP=64 the forward spills 16 bytes, HP=32 fits (63/98).
# The same limit on every device (limits must not depend on where the code runs).
MAX_HIDDEN = {"fp32-tf32": 64, "fp32-ieee": 32, "fp16": 64, "bf16": 64}
NUM_WARPS = 8
BB = 16   # tl.dot's minimum tile side


@triton.jit
def rnn_variant_persistent_fwd_kernel(
    p_xproj, p_whh, p_h0, p_starts, p_keep,     # [T, B, D*H]; [D, H, H]; [D, B, H]; [D, T, B]; keep
    p_y, p_ws, p_len, T, B, H, D,
    RELU: tl.constexpr, ZONEOUT: tl.constexpr,
    HP: tl.constexpr, BB: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    mj = m_j[None, :]
    w = load_square(p_whh, d * H * H, o_j, o_j, H, True)                         # [HP(k), HP(j)]
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]                          # [BB, HP]
    b_h0 = tl.load(p_h0 + o_state, mask=m_row[:, None] & mj, other=0.0).to(tl.float32)
    b_h = b_h0
    for s in range(0, n_steps):
        active, t, _ = step_times(s, d, lens, m_row)
        ma = active[:, None] & mj
        st = tl.load(p_starts + (d * T + t) * B + o_b, mask=active, other=0) != 0    # [BB]
        b_hin = tl.where(st[:, None], b_h0, b_h)
        o_y = ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
        h_new = rnn_activation(mm(b_hin, w, DOT_FP32, PRECISION)
                               + tl.load(p_xproj + o_y, mask=ma, other=0.0).to(tl.float32), RELU)
        o_w = ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :]
        tl.store(p_ws + o_w, h_new, mask=ma)
        if ZONEOUT:
            b_k = tl.load(p_keep + o_w, mask=ma, other=0.0)
            h_new = b_k * b_hin + (1.0 - b_k) * h_new
        tl.store(p_y + o_y, h_new.to(p_y.dtype.element_ty), mask=ma)
        b_h = tl.where(active[:, None], h_new, b_h)     # finished rows keep their state


@triton.jit
def rnn_variant_persistent_bwd_kernel(
    p_dy, p_dhn, p_whh, p_ws, p_starts, p_keep,     # [T, B, D*H]; [D, B, H]; [D, H, H]; ws; ...
    p_dg, p_dh0, p_len, T, B, H, D,                 # [D, T, B, H]; [D, B, H]
    RELU: tl.constexpr, ZONEOUT: tl.constexpr,
    HP: tl.constexpr, BB: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    mj = m_j[None, :]
    w = load_square(p_whh, d * H * H, o_j, o_j, H, False)                        # [HP(j), HP(k)]
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]
    m = m_row[:, None] & mj
    b_dhn = tl.load(p_dhn + o_state, mask=m, other=0.0).to(tl.float32)
    zero = tl.zeros([BB, HP], tl.float32)
    rec = zero              # dG(s+1) @ W_hh
    carry = zero            # zoneout: k ⊙ dh_t of step s+1, to its h_in
    cut = tl.zeros([BB], tl.int32) != 0   # step s+1 started afresh: nothing crosses to step s
    acc_dh0 = zero
    for s_back in range(0, n_steps):
        s = n_steps - 1 - s_back
        active, t, _ = step_times(s, d, lens, m_row)
        last = (s == lens - 1)[:, None]
        ma = active[:, None] & mj
        o_y = ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
        b_dh = tl.load(p_dy + o_y, mask=ma, other=0.0).to(tl.float32)
        b_dh += tl.where(last, b_dhn, tl.where(~cut[:, None], rec + carry, 0.0))    # ∂L/∂h_t
        st = tl.load(p_starts + (d * T + t) * B + o_b, mask=active, other=0) != 0    # [BB]
        o_w = ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :]
        if ZONEOUT:   # h_t = k h_in + (1 − k) h'
            b_k = tl.load(p_keep + o_w, mask=ma, other=0.0)
            b_direct = tl.where(ma, b_k * b_dh, 0.0)                             # → h_in
            b_dh = (1.0 - b_k) * b_dh                                            # → h'
            acc_dh0 += tl.where(st[:, None], b_direct, 0.0)
            carry = tl.where(active[:, None], b_direct, carry)
        b_hn = tl.load(p_ws + o_w, mask=ma, other=0.0)
        b_g = tl.where(ma, b_dh * rnn_activation_grad(b_hn, RELU), 0.0)
        tl.store(p_dg + o_w, b_g, mask=ma)
        rec = tl.where(active[:, None], mm(b_g, w, DOT_FP32, PRECISION), rec)
        cut = tl.where(active, st, cut)
    tl.store(p_dh0 + o_state, acc_dh0, mask=m)


# ---------------------------------------------------------------------------------- launchers

def _make(relu):
    def forward(xproj, w_hh, b_hh, ln, h0, c0, starts, keep, lens, n_active, y, ws):
        """See ``layout``. One launch; ``b_hh`` is in xproj."""
        T, B = xproj.shape[:2]
        D, _, H = w_hh.shape
        assert ws.shape[-1] == H, (ws.shape, H)
        dot_fp32, precision = dot_mode(w_hh.dtype)
        if B:
            rnn_variant_persistent_fwd_kernel[(triton.cdiv(B, BB), D)](
                xproj, w_hh, h0, starts.to(torch.uint8).contiguous(),
                keep if keep is not None else xproj, y, ws, lens, T, B, H, D,
                RELU=relu, ZONEOUT=keep is not None, HP=padded_hidden(H), BB=BB,
                DOT_FP32=dot_fp32, PRECISION=precision, num_warps=NUM_WARPS,
            )

    def backward(dy, dh_n, dc_n, w_hh, b_hh, ln, ws, y, h0, c0, starts, keep, lens, n_active,
                 alloc):
        """See ``layout``: the dict of gradients. One launch."""
        T, B = dy.shape[:2]
        D, _, H = w_hh.shape
        dot_fp32, precision = dot_mode(w_hh.dtype, backward=True)
        dg = alloc((D, T, B, H))
        dh0 = torch.zeros((D, B, H), dtype=torch.float32, device=dy.device)
        if B:
            rnn_variant_persistent_bwd_kernel[(triton.cdiv(B, BB), D)](
                dy, dh_n, w_hh, ws, starts.to(torch.uint8).contiguous(),
                keep if keep is not None else dh0, dg, dh0, lens, T, B, H, D,
                RELU=relu, ZONEOUT=keep is not None, HP=padded_hidden(H), BB=BB,
                DOT_FP32=dot_fp32, PRECISION=precision, num_warps=NUM_WARPS,
            )
        return {"dg_in": dg, "dg_hid": dg, "dh0_direct": dh0, "dc0": None, "dgain_hh": None,
                "db_hh": None, "dgain_c": None, "dbias_c": None}

    return SimpleNamespace(GATES=GATES, MAX_HIDDEN=MAX_HIDDEN, forward=forward,
                           backward=backward)


TANH = _make(relu=False)
RELU = _make(relu=True)
