"""LSTM and LayerNorm LSTM variants (zoneout, resets), batch-tiled persistent form: one launch
for the whole sequence, forward and backward (``"triton-persistent"``).

Dimension legend: see ``kernels/triton/persistent_common`` (T, B, D, H, HP, BB; G = 4,
N = 4H). Workspace columns and launcher interface: ``layout`` (the same as ``lstm_step``'s, so
the host ``fusedrnn/backends/triton_variant.py`` is shared).

A program owns a batch tile and ALL hidden units of one direction; W_hh (4 tiles HP × HP), h,
c, h0 and c0 live in registers for the whole sequence. Because the program holds whole rows:

* the **LN row statistics** over all 4H gates of ``h W_hhᵀ`` (and over H for c') are
  in-program reductions (``tl.sum(..., axis=1)`` over the four [BB, HP] gate tiles, columns
  j ≥ H masked out), two-pass (mean, then Σ(x − μ)²) in fp32;
* the LN backward's two row means are the same reductions;
* per-row gain/bias gradients (``dgain_hh``, ``dgain_c``, ``dbias_c``) and ``dh0_direct`` /
  ``dc0`` accumulate in registers over time and are stored once at the end.

Forward, s = 0 … max(len) − 1 (row b at time t):
    h_in, c_in = (h0, c0) where starts[d, t, b], else the carried state
    rec = h_in @ W_hhᵀ;  a = xproj + (LN(rec) ⊙ γ_hh or rec)     (xproj holds b_ih + b_hh)
    c' = σ(a_f) c_in + σ(a_i) tanh(a_g);  ĉ = LN(c');  h' = σ(a_o) tanh(ĉ γ_c + β_c or c')
    h_t = k h_in + (1 − k) h' (zoneout);  y[t] = h_t;  carried state (h_t, c')
Backward, s = max(len) − 1 … 0, carrying in registers rec = dg_hid(s+1) @ W_hh, the zoneout
carry k ⊙ dh(s+1), dc_in(s+1) and whether step s+1 started afresh (then nothing crosses):
    dh_t = dy + (last ? dh_n : cut ? 0 : rec + k ⊙ dh carry);  dc = (last ? dc_n : cut ? 0 : dc carry)
    steps that start afresh add k ⊙ dh_t to dh0_direct and dc' ⊙ f to dc0 (the host adds
    (Σ_t starts ⊙ dg_hid) @ W_hh to dh0: that split is layout.py's contract).
"""

import torch
import triton
import triton.language as tl

from . import layout
from ..launch_common import dot_mode
from ..persistent_common import load_square, mm, padded_hidden, step_times, tile_rows
from .step_common import ln_grad, ln_rstd, row_sum, sigmoid, tanh

GATES = 4
# Register budget, measured with ptxas for sm_90 at 8 warps (LayerNorm and zoneout on; kept
# checked by tests/test_variant_ptx_compile.py). Forward: HP=32 fits for every dot key
# (≤ 244 registers). Backward: with mma dots (TF32, fp16's TF32, bf16) it spills at every HP,
# even 16 (LSTM 56–330 bytes, GRU 40–130 bytes; at 4 warps more), the layout conversions
# around the dots and the register accumulators being the cost, not W_hh; with fp32 IEEE (FMA)
# dots HP=32 fits (LSTM 193, GRU 185 registers). So the backward's recurrent dots run on fp32
# operands at IEEE precision for every dtype (``backward_dot_mode``: more precise than the
# classic kernels' TF32, slower per FLOP; speed unmeasured), and H ≤ 32 everywhere. The same
# limit on every device (limits must not depend on where the code runs).
MAX_HIDDEN = {"fp32-tf32": 32, "fp32-ieee": 32, "fp16": 32, "bf16": 32}


def backward_dot_mode(dtype):
    """``(DOT_FP32, PRECISION)`` of the backward kernel: fp32 IEEE for every dtype (see above)."""
    return True, "ieee"


NUM_WARPS = 8
BB = 16   # tl.dot's minimum tile side


@triton.jit
def _ln4(r_i, r_f, r_g, r_o, mj, N, EPS: tl.constexpr):
    """LN over the 4 gate tiles of each row (unscaled): ``(n_i, n_f, n_g, n_o, rstd [BB])``."""
    mu = (row_sum(r_i, mj) + row_sum(r_f, mj) + row_sum(r_g, mj) + row_sum(r_o, mj)) / N
    r_i = tl.where(mj, r_i - mu[:, None], 0.0)
    r_f = tl.where(mj, r_f - mu[:, None], 0.0)
    r_g = tl.where(mj, r_g - mu[:, None], 0.0)
    r_o = tl.where(mj, r_o - mu[:, None], 0.0)
    rstd = ln_rstd(tl.sum(r_i * r_i, axis=1) + tl.sum(r_f * r_f, axis=1)
                   + tl.sum(r_g * r_g, axis=1) + tl.sum(r_o * r_o, axis=1), N, EPS)
    return (r_i * rstd[:, None], r_f * rstd[:, None], r_g * rstd[:, None], r_o * rstd[:, None],
            rstd)


@triton.jit
def lstm_variant_persistent_fwd_kernel(
    p_xproj, p_whh, p_lnhh, p_lncw, p_lncb,     # [T, B, D*4H]; [D, 4H, H]; [D, 4H]; [D, H] x2
    p_h0, p_c0, p_starts, p_keep,               # [D, B, H] x2; [D, T, B] uint8; [D, T, B, H]
    p_y, p_ws, p_len, T, B, H, D, W,
    LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr, EPS: tl.constexpr,
    HP: tl.constexpr, BB: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    N = 4 * H
    mj = m_j[None, :]                                                            # [1, HP]
    base = d * N * H
    w_i = load_square(p_whh, base, o_j, o_j, H, True)                            # [HP(k), HP(j)]
    w_f = load_square(p_whh, base + H * H, o_j, o_j, H, True)
    w_g = load_square(p_whh, base + 2 * H * H, o_j, o_j, H, True)
    w_o = load_square(p_whh, base + 3 * H * H, o_j, o_j, H, True)
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]                          # [BB, HP]
    m = m_row[:, None] & mj
    b_h0 = tl.load(p_h0 + o_state, mask=m, other=0.0).to(tl.float32)
    b_c0 = tl.load(p_c0 + o_state, mask=m, other=0.0).to(tl.float32)
    b_h = b_h0
    b_c = b_c0
    for s in range(0, n_steps):
        active, t, _ = step_times(s, d, lens, m_row)
        ma = active[:, None] & mj
        st = tl.load(p_starts + (d * T + t) * B + o_b, mask=active, other=0) != 0    # [BB]
        b_hin = tl.where(st[:, None], b_h0, b_h)
        b_cin = tl.where(st[:, None], b_c0, b_c)
        r_i = mm(b_hin, w_i, DOT_FP32, PRECISION)
        r_f = mm(b_hin, w_f, DOT_FP32, PRECISION)
        r_g = mm(b_hin, w_g, DOT_FP32, PRECISION)
        r_o = mm(b_hin, w_o, DOT_FP32, PRECISION)
        o_w = ((d * T + t) * B + o_b) * W                                        # [BB]
        p_w = p_ws + o_w[:, None] + o_j[None, :]
        if LAYER_NORM:
            r_i, r_f, r_g, r_o, rstd = _ln4(r_i, r_f, r_g, r_o, mj, N, EPS)
            tl.store(p_w + 6 * H, r_i, mask=ma)                                  # n_hh
            tl.store(p_w + 7 * H, r_f, mask=ma)
            tl.store(p_w + 8 * H, r_g, mask=ma)
            tl.store(p_w + 9 * H, r_o, mask=ma)
            tl.store(p_ws + o_w + 10 * H, rstd, mask=active)
            p_gain = p_lnhh + d * N + o_j[None, :]
            r_i = r_i * tl.load(p_gain, mask=mj, other=0.0).to(tl.float32)
            r_f = r_f * tl.load(p_gain + H, mask=mj, other=0.0).to(tl.float32)
            r_g = r_g * tl.load(p_gain + 2 * H, mask=mj, other=0.0).to(tl.float32)
            r_o = r_o * tl.load(p_gain + 3 * H, mask=mj, other=0.0).to(tl.float32)
        p_x = p_xproj + ((t * B + o_b) * (D * N) + d * N)[:, None] + o_j[None, :]
        b_i = sigmoid(r_i + tl.load(p_x, mask=ma, other=0.0).to(tl.float32))
        b_f = sigmoid(r_f + tl.load(p_x + H, mask=ma, other=0.0).to(tl.float32))
        b_g = tanh(r_g + tl.load(p_x + 2 * H, mask=ma, other=0.0).to(tl.float32))
        b_o = sigmoid(r_o + tl.load(p_x + 3 * H, mask=ma, other=0.0).to(tl.float32))
        c_new = b_f * b_cin + b_i * b_g                                          # c'
        tl.store(p_w, b_i, mask=ma)
        tl.store(p_w + H, b_f, mask=ma)
        tl.store(p_w + 2 * H, b_g, mask=ma)
        tl.store(p_w + 3 * H, b_o, mask=ma)
        tl.store(p_w + 4 * H, c_new, mask=ma)
        if LAYER_NORM:
            # Cell-state LayerNorm over H, the same two-pass row statistics.
            mu_c = row_sum(c_new, mj) / H
            b_ch = tl.where(mj, c_new - mu_c[:, None], 0.0)
            rstd_c = ln_rstd(tl.sum(b_ch * b_ch, axis=1), H, EPS)
            b_ch = b_ch * rstd_c[:, None]                                        # ĉ
            tl.store(p_w + 5 * H, b_ch, mask=ma)
            tl.store(p_ws + o_w + 10 * H + 1, rstd_c, mask=active)
            b_cout = (b_ch * tl.load(p_lncw + d * H + o_j[None, :], mask=mj, other=0.0).to(tl.float32)
                      + tl.load(p_lncb + d * H + o_j[None, :], mask=mj, other=0.0).to(tl.float32))
        else:
            b_cout = c_new
        h_new = b_o * tanh(b_cout)                                               # h'
        if ZONEOUT:
            b_k = tl.load(p_keep + ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :], mask=ma,
                          other=0.0)
            h_new = b_k * b_hin + (1.0 - b_k) * h_new
        tl.store(p_y + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :],
                 h_new.to(p_y.dtype.element_ty), mask=ma)
        b_h = tl.where(active[:, None], h_new, b_h)     # finished rows keep their state
        b_c = tl.where(active[:, None], c_new, b_c)


@triton.jit
def lstm_variant_persistent_bwd_kernel(
    p_dy, p_dhn, p_dcn, p_whh, p_ws,            # [T, B, D*H]; [D, B, H] x2; [D, 4H, H]; ws
    p_lnhh, p_lncw, p_lncb, p_c0,               # [D, 4H]; [D, H] x2; [D, B, H]
    p_starts, p_keep,                           # [D, T, B] uint8; [D, T, B, H]
    p_dgin, p_dghid, p_dh0, p_dc0,              # [D, T, B, 4H] x2; [D, B, H] x2
    p_dgain, p_dgc, p_dbc,                      # [D, B, 4H]; [D, B, H] x2
    p_len, T, B, H, D, W,
    LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr,
    HP: tl.constexpr, BB: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    N = 4 * H
    mj = m_j[None, :]
    base = d * N * H
    w_i = load_square(p_whh, base, o_j, o_j, H, False)                           # [HP(j), HP(k)]
    w_f = load_square(p_whh, base + H * H, o_j, o_j, H, False)
    w_g = load_square(p_whh, base + 2 * H * H, o_j, o_j, H, False)
    w_o = load_square(p_whh, base + 3 * H * H, o_j, o_j, H, False)
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]                          # [BB, HP]
    m = m_row[:, None] & mj
    b_dhn = tl.load(p_dhn + o_state, mask=m, other=0.0).to(tl.float32)
    b_dcn = tl.load(p_dcn + o_state, mask=m, other=0.0).to(tl.float32)
    b_c0 = tl.load(p_c0 + o_state, mask=m, other=0.0).to(tl.float32)
    if LAYER_NORM:
        b_gc = tl.load(p_lncw + d * H + o_j[None, :], mask=mj, other=0.0).to(tl.float32)
        b_bc = tl.load(p_lncb + d * H + o_j[None, :], mask=mj, other=0.0).to(tl.float32)
        p_gain = p_lnhh + d * N + o_j[None, :]
        g_hi = tl.load(p_gain, mask=mj, other=0.0).to(tl.float32)
        g_hf = tl.load(p_gain + H, mask=mj, other=0.0).to(tl.float32)
        g_hg = tl.load(p_gain + 2 * H, mask=mj, other=0.0).to(tl.float32)
        g_ho = tl.load(p_gain + 3 * H, mask=mj, other=0.0).to(tl.float32)
    zero = tl.zeros([BB, HP], tl.float32)
    rec = zero              # dg_hid(s+1) @ W_hh
    dh_carry = zero         # zoneout: k ⊙ dh_t of step s+1, to its h_in
    dc_carry = zero         # ∂L/∂c_in of step s+1
    cut = tl.zeros([BB], tl.int32) != 0   # step s+1 started afresh: nothing crosses to step s
    acc_dh0 = zero
    acc_dc0 = zero
    acc_gi = zero
    acc_gf = zero
    acc_gg = zero
    acc_go = zero
    acc_gc = zero
    acc_bc = zero
    for s_back in range(0, n_steps):
        s = n_steps - 1 - s_back
        active, t, t_prev = step_times(s, d, lens, m_row)
        last = (s == lens - 1)[:, None]
        ma = active[:, None] & mj
        fut = ~cut[:, None]
        b_dh = tl.load(p_dy + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :], mask=ma,
                       other=0.0).to(tl.float32)
        b_dh += tl.where(last, b_dhn, tl.where(fut, rec + dh_carry, 0.0))        # ∂L/∂h_t
        b_dc = tl.where(last, b_dcn, tl.where(fut, dc_carry, 0.0))               # from c' on
        st = tl.load(p_starts + (d * T + t) * B + o_b, mask=active, other=0) != 0    # [BB]
        st2 = st[:, None] & ma
        if ZONEOUT:   # h_t = k h_in + (1 − k) h'
            b_k = tl.load(p_keep + ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :], mask=ma,
                          other=0.0)
            b_direct = b_k * b_dh                                                # → h_in
            b_dh = (1.0 - b_k) * b_dh                                            # → h'
            acc_dh0 += tl.where(st2, b_direct, 0.0)
            dh_carry = tl.where(active[:, None], b_direct, dh_carry)

        o_w = ((d * T + t) * B + o_b) * W                                        # [BB]
        p_w = p_ws + o_w[:, None] + o_j[None, :]
        b_i = tl.load(p_w, mask=ma, other=0.0)
        b_f = tl.load(p_w + H, mask=ma, other=0.0)
        b_g = tl.load(p_w + 2 * H, mask=ma, other=0.0)
        b_o = tl.load(p_w + 3 * H, mask=ma, other=0.0)
        if LAYER_NORM:
            b_ch = tl.load(p_w + 5 * H, mask=ma, other=0.0)                      # ĉ
            rstd_c = tl.load(p_ws + o_w + 10 * H + 1, mask=active, other=0.0)
            b_cout = b_ch * b_gc + b_bc
        else:
            b_cout = tl.load(p_w + 4 * H, mask=ma, other=0.0)
        b_tc = tanh(b_cout)
        b_do = b_dh * b_tc
        b_dcout = tl.where(ma, b_dh * b_o * (1.0 - b_tc * b_tc), 0.0)
        if LAYER_NORM:
            acc_bc += b_dcout
            acc_gc += b_dcout * b_ch
            b_dn = b_dcout * b_gc
            b_dc += ln_grad(b_dn, b_ch, rstd_c, tl.sum(b_dn, axis=1) / H,
                            tl.sum(b_dn * b_ch, axis=1) / H)
        else:
            b_dc += b_dcout
        # c_in: c0 where this step starts afresh, else c' of the step before.
        b_cp = tl.load(p_ws + ((d * T + t_prev) * B + o_b)[:, None] * W + 4 * H + o_j[None, :],
                       mask=ma & ~st[:, None], other=0.0)
        b_cin = tl.where(st[:, None], b_c0, b_cp)
        b_dcin = b_dc * b_f
        acc_dc0 += tl.where(st2, b_dcin, 0.0)
        dc_carry = tl.where(active[:, None], b_dcin, dc_carry)

        da_i = tl.where(ma, b_dc * b_g * b_i * (1.0 - b_i), 0.0)
        da_f = tl.where(ma, b_dc * b_cin * b_f * (1.0 - b_f), 0.0)
        da_g = tl.where(ma, b_dc * b_i * (1.0 - b_g * b_g), 0.0)
        da_o = tl.where(ma, b_do * b_o * (1.0 - b_o), 0.0)
        o_g = ((d * T + t) * B + o_b)[:, None] * N + o_j[None, :]                # [BB, HP]
        tl.store(p_dgin + o_g, da_i, mask=ma)
        tl.store(p_dgin + o_g + H, da_f, mask=ma)
        tl.store(p_dgin + o_g + 2 * H, da_g, mask=ma)
        tl.store(p_dgin + o_g + 3 * H, da_o, mask=ma)
        if LAYER_NORM:
            # a = xproj + n_hh ⊙ γ_hh, n_hh = LN(rec): through the gain, then the LN (two row
            # means over all 4H columns, in-program reductions).
            n_i = tl.load(p_w + 6 * H, mask=ma, other=0.0)
            n_f = tl.load(p_w + 7 * H, mask=ma, other=0.0)
            n_g = tl.load(p_w + 8 * H, mask=ma, other=0.0)
            n_o = tl.load(p_w + 9 * H, mask=ma, other=0.0)
            rstd = tl.load(p_ws + o_w + 10 * H, mask=active, other=0.0)
            acc_gi += da_i * n_i
            acc_gf += da_f * n_f
            acc_gg += da_g * n_g
            acc_go += da_o * n_o
            da_i = da_i * g_hi
            da_f = da_f * g_hf
            da_g = da_g * g_hg
            da_o = da_o * g_ho
            mean_dn = (tl.sum(da_i, axis=1) + tl.sum(da_f, axis=1) + tl.sum(da_g, axis=1)
                       + tl.sum(da_o, axis=1)) / N
            mean_dnn = (tl.sum(da_i * n_i, axis=1) + tl.sum(da_f * n_f, axis=1)
                        + tl.sum(da_g * n_g, axis=1) + tl.sum(da_o * n_o, axis=1)) / N
            da_i = tl.where(ma, ln_grad(da_i, n_i, rstd, mean_dn, mean_dnn), 0.0)
            da_f = tl.where(ma, ln_grad(da_f, n_f, rstd, mean_dn, mean_dnn), 0.0)
            da_g = tl.where(ma, ln_grad(da_g, n_g, rstd, mean_dn, mean_dnn), 0.0)
            da_o = tl.where(ma, ln_grad(da_o, n_o, rstd, mean_dn, mean_dnn), 0.0)
            tl.store(p_dghid + o_g, da_i, mask=ma)
            tl.store(p_dghid + o_g + H, da_f, mask=ma)
            tl.store(p_dghid + o_g + 2 * H, da_g, mask=ma)
            tl.store(p_dghid + o_g + 3 * H, da_o, mask=ma)
        rec_new = (mm(da_i, w_i, DOT_FP32, PRECISION) + mm(da_f, w_f, DOT_FP32, PRECISION)
                   + mm(da_g, w_g, DOT_FP32, PRECISION) + mm(da_o, w_o, DOT_FP32, PRECISION))
        rec = tl.where(active[:, None], rec_new, rec)
        cut = tl.where(active, st, cut)
    tl.store(p_dh0 + o_state, acc_dh0, mask=m)
    tl.store(p_dc0 + o_state, acc_dc0, mask=m)
    if LAYER_NORM:
        o_a = (d * B + o_b)[:, None] * N + o_j[None, :]
        tl.store(p_dgain + o_a, acc_gi, mask=m)
        tl.store(p_dgain + o_a + H, acc_gf, mask=m)
        tl.store(p_dgain + o_a + 2 * H, acc_gg, mask=m)
        tl.store(p_dgain + o_a + 3 * H, acc_go, mask=m)
        tl.store(p_dgc + o_state, acc_gc, mask=m)
        tl.store(p_dbc + o_state, acc_bc, mask=m)


# ---------------------------------------------------------------------------------- launchers

def forward(xproj, w_hh, b_hh, ln, h0, c0, starts, keep, lens, n_active, y, ws):
    """See ``layout``. ``b_hh`` is unused (the LSTM's is in xproj). One launch."""
    T, B = xproj.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("LSTM", ln is not None, H)["W"]
    assert ws.shape[-1] == W, (ws.shape, W)
    dot_fp32, precision = dot_mode(w_hh.dtype)
    if B:
        lstm_variant_persistent_fwd_kernel[(triton.cdiv(B, BB), D)](
            xproj, w_hh, *layout.lstm_ln_operands(ln, xproj), h0, c0,
            starts.to(torch.uint8).contiguous(),
            keep if keep is not None else xproj, y, ws, lens, T, B, H, D, W,
            LAYER_NORM=ln is not None, ZONEOUT=keep is not None, EPS=layout.LN_EPS,
            HP=padded_hidden(H), BB=BB, DOT_FP32=dot_fp32, PRECISION=precision,
            num_warps=NUM_WARPS,
        )


def backward(dy, dh_n, dc_n, w_hh, b_hh, ln, ws, y, h0, c0, starts, keep, lens, n_active, alloc):
    """See ``layout``: the dict of gradients. One launch."""
    T, B = dy.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("LSTM", ln is not None, H)["W"]
    dot_fp32, precision = backward_dot_mode(w_hh.dtype)

    def zeros(*shape):
        return torch.zeros(shape, dtype=torch.float32, device=dy.device)

    has_ln = ln is not None
    dg_in = alloc((D, T, B, N))
    dg_hid = alloc((D, T, B, N)) if has_ln else dg_in
    dh0, dc0 = zeros(D, B, H), zeros(D, B, H)
    dgain, dgc, dbc = (zeros(D, B, N), zeros(D, B, H), zeros(D, B, H)) if has_ln \
        else (dh0, dh0, dh0)
    if dc_n is None:
        dc_n = zeros(D, B, H)
    if B:
        lstm_variant_persistent_bwd_kernel[(triton.cdiv(B, BB), D)](
            dy, dh_n, dc_n, w_hh, ws, *layout.lstm_ln_operands(ln, dh0), c0,
            starts.to(torch.uint8).contiguous(), keep if keep is not None else dh0,
            dg_in, dg_hid, dh0, dc0, dgain, dgc, dbc, lens, T, B, H, D, W,
            LAYER_NORM=has_ln, ZONEOUT=keep is not None,
            HP=padded_hidden(H), BB=BB, DOT_FP32=dot_fp32, PRECISION=precision,
            num_warps=NUM_WARPS,
        )
    return {"dg_in": dg_in, "dg_hid": dg_hid, "dh0_direct": dh0, "dc0": dc0,
            "dgain_hh": dgain if has_ln else None, "db_hh": None,
            "dgain_c": dgc if has_ln else None, "dbias_c": dbc if has_ln else None}
