"""GRU and LayerNorm GRU variants (zoneout, resets), batch-tiled persistent form: one launch
for the whole sequence, forward and backward (``"triton-persistent"``).

Dimension legend: see ``kernels/triton/persistent_common`` (T, B, D, H, HP, BB; G = 3,
N = 3H). Workspace columns and launcher interface: ``layout`` (shared host
``fusedrnn/backends/triton_variant.py``).

A program owns a batch tile and ALL hidden units of one direction; W_hh (3 tiles HP × HP),
b_hh, γ_hh, h and h0 live in registers for the whole sequence, so the **LN row statistics**
over all 3H gates of ``h W_hhᵀ`` are in-program reductions (``tl.sum(..., axis=1)`` over the
three [BB, HP] gate tiles, columns j ≥ H masked out), and so are the LN backward's two row
means. ``dgain_hh``, ``db_hh`` and ``dh0_direct`` accumulate in registers, stored once.

Forward (gate order r z n, reset after the matmul; xproj holds b_ih only):
    h_in = h0 where starts[d, t, b], else the carried state
    a_h  = (LN(h_in W_hhᵀ) ⊙ γ_hh or h_in W_hhᵀ) + b_hh
    r = σ(x_r + a_hr)   z = σ(x_z + a_hz)   n = tanh(x_n + r a_hn)   h' = (1 − z) n + z h_in
    h_t = k h_in + (1 − k) h' (zoneout);  ws = r z n a_hn (n_hh rstd_hh)
Backward, carrying rec = dg_hid(s+1) @ W_hh and the direct part (k dh + z dh') of step s+1;
nothing crosses a step that starts afresh. dh0_direct holds the direct parts of steps that
start from h0; the host adds (Σ_t starts ⊙ dg_hid) @ W_hh (layout.py's split).
"""

import torch
import triton
import triton.language as tl

from . import layout
from ..launch_common import dot_mode
from ..persistent_common import load_square, mm, padded_hidden, step_times, tile_rows
from .step_common import ln_grad, ln_rstd, row_sum, sigmoid, tanh

GATES = 3
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
def _ln3(r_r, r_z, r_n, mj, N, EPS: tl.constexpr):
    """LN over the 3 gate tiles of each row (unscaled): ``(n_r, n_z, n_n, rstd [BB])``."""
    mu = (row_sum(r_r, mj) + row_sum(r_z, mj) + row_sum(r_n, mj)) / N
    r_r = tl.where(mj, r_r - mu[:, None], 0.0)
    r_z = tl.where(mj, r_z - mu[:, None], 0.0)
    r_n = tl.where(mj, r_n - mu[:, None], 0.0)
    rstd = ln_rstd(tl.sum(r_r * r_r, axis=1) + tl.sum(r_z * r_z, axis=1)
                   + tl.sum(r_n * r_n, axis=1), N, EPS)
    return r_r * rstd[:, None], r_z * rstd[:, None], r_n * rstd[:, None], rstd


@triton.jit
def gru_variant_persistent_fwd_kernel(
    p_xproj, p_whh, p_bhh, p_lnhh,              # [T, B, D*3H]; [D, 3H, H]; [D, 3H]; [D, 3H]
    p_h0, p_starts, p_keep,                     # [D, B, H]; [D, T, B] uint8; [D, T, B, H]
    p_y, p_ws, p_len, T, B, H, D, W,
    HAS_BHH: tl.constexpr, LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr, EPS: tl.constexpr,
    HP: tl.constexpr, BB: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    N = 3 * H
    mj = m_j[None, :]                                                            # [1, HP]
    base = d * N * H
    w_r = load_square(p_whh, base, o_j, o_j, H, True)                            # [HP(k), HP(j)]
    w_z = load_square(p_whh, base + H * H, o_j, o_j, H, True)
    w_n = load_square(p_whh, base + 2 * H * H, o_j, o_j, H, True)
    bh_r = tl.zeros([1, HP], tl.float32)
    bh_z = tl.zeros([1, HP], tl.float32)
    bh_n = tl.zeros([1, HP], tl.float32)
    if HAS_BHH:
        p_b = p_bhh + d * N + o_j[None, :]
        bh_r = tl.load(p_b, mask=mj, other=0.0).to(tl.float32)
        bh_z = tl.load(p_b + H, mask=mj, other=0.0).to(tl.float32)
        bh_n = tl.load(p_b + 2 * H, mask=mj, other=0.0).to(tl.float32)
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]                          # [BB, HP]
    m = m_row[:, None] & mj
    b_h0 = tl.load(p_h0 + o_state, mask=m, other=0.0).to(tl.float32)
    b_h = b_h0
    for s in range(0, n_steps):
        active, t, _ = step_times(s, d, lens, m_row)
        ma = active[:, None] & mj
        st = tl.load(p_starts + (d * T + t) * B + o_b, mask=active, other=0) != 0    # [BB]
        b_hin = tl.where(st[:, None], b_h0, b_h)
        r_r = mm(b_hin, w_r, DOT_FP32, PRECISION)
        r_z = mm(b_hin, w_z, DOT_FP32, PRECISION)
        r_n = mm(b_hin, w_n, DOT_FP32, PRECISION)
        o_w = ((d * T + t) * B + o_b) * W                                        # [BB]
        p_w = p_ws + o_w[:, None] + o_j[None, :]
        if LAYER_NORM:
            r_r, r_z, r_n, rstd = _ln3(r_r, r_z, r_n, mj, N, EPS)
            tl.store(p_w + 4 * H, r_r, mask=ma)                                  # n_hh
            tl.store(p_w + 5 * H, r_z, mask=ma)
            tl.store(p_w + 6 * H, r_n, mask=ma)
            tl.store(p_ws + o_w + 7 * H, rstd, mask=active)
            p_gain = p_lnhh + d * N + o_j[None, :]
            r_r = r_r * tl.load(p_gain, mask=mj, other=0.0).to(tl.float32)
            r_z = r_z * tl.load(p_gain + H, mask=mj, other=0.0).to(tl.float32)
            r_n = r_n * tl.load(p_gain + 2 * H, mask=mj, other=0.0).to(tl.float32)
        a_hn = r_n + bh_n
        p_x = p_xproj + ((t * B + o_b) * (D * N) + d * N)[:, None] + o_j[None, :]
        b_r = sigmoid(r_r + bh_r + tl.load(p_x, mask=ma, other=0.0).to(tl.float32))
        b_z = sigmoid(r_z + bh_z + tl.load(p_x + H, mask=ma, other=0.0).to(tl.float32))
        b_n = tanh(tl.load(p_x + 2 * H, mask=ma, other=0.0).to(tl.float32) + b_r * a_hn)
        h_new = (1.0 - b_z) * b_n + b_z * b_hin                                  # h'
        tl.store(p_w, b_r, mask=ma)
        tl.store(p_w + H, b_z, mask=ma)
        tl.store(p_w + 2 * H, b_n, mask=ma)
        tl.store(p_w + 3 * H, a_hn, mask=ma)
        if ZONEOUT:
            b_k = tl.load(p_keep + ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :], mask=ma,
                          other=0.0)
            h_new = b_k * b_hin + (1.0 - b_k) * h_new
        tl.store(p_y + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :],
                 h_new.to(p_y.dtype.element_ty), mask=ma)
        b_h = tl.where(active[:, None], h_new, b_h)     # finished rows keep their state


@triton.jit
def gru_variant_persistent_bwd_kernel(
    p_dy, p_dhn, p_whh, p_ws, p_y, p_lnhh, p_h0,    # ...; [D, 3H, H]; ws; y; [D, 3H]; [D, B, H]
    p_starts, p_keep,                               # [D, T, B] uint8; [D, T, B, H]
    p_dgin, p_dghid, p_dh0, p_dgain, p_dbhh,        # [D, T, B, 3H] x2; [D, B, H]; [D, B, 3H] x2
    p_len, T, B, H, D, W,
    LAYER_NORM: tl.constexpr, ZONEOUT: tl.constexpr,
    HP: tl.constexpr, BB: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    N = 3 * H
    mj = m_j[None, :]
    base = d * N * H
    w_r = load_square(p_whh, base, o_j, o_j, H, False)                           # [HP(j), HP(k)]
    w_z = load_square(p_whh, base + H * H, o_j, o_j, H, False)
    w_n = load_square(p_whh, base + 2 * H * H, o_j, o_j, H, False)
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]                          # [BB, HP]
    m = m_row[:, None] & mj
    b_dhn = tl.load(p_dhn + o_state, mask=m, other=0.0).to(tl.float32)
    b_h0 = tl.load(p_h0 + o_state, mask=m, other=0.0).to(tl.float32)
    if LAYER_NORM:
        p_gain = p_lnhh + d * N + o_j[None, :]
        g_hr = tl.load(p_gain, mask=mj, other=0.0).to(tl.float32)
        g_hz = tl.load(p_gain + H, mask=mj, other=0.0).to(tl.float32)
        g_hn = tl.load(p_gain + 2 * H, mask=mj, other=0.0).to(tl.float32)
    zero = tl.zeros([BB, HP], tl.float32)
    rec = zero              # dg_hid(s+1) @ W_hh
    carry = zero            # direct part of step s+1's ∂L/∂h_in: k dh + z dh'
    cut = tl.zeros([BB], tl.int32) != 0   # step s+1 started afresh: nothing crosses to step s
    acc_dh0 = zero
    acc_br = zero
    acc_bz = zero
    acc_bn = zero
    acc_gr = zero
    acc_gz = zero
    acc_gn = zero
    for s_back in range(0, n_steps):
        s = n_steps - 1 - s_back
        active, t, t_prev = step_times(s, d, lens, m_row)
        last = (s == lens - 1)[:, None]
        ma = active[:, None] & mj
        o_y = ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
        b_dh = tl.load(p_dy + o_y, mask=ma, other=0.0).to(tl.float32)
        b_dh += tl.where(last, b_dhn, tl.where(~cut[:, None], rec + carry, 0.0))    # ∂L/∂h_t
        st = tl.load(p_starts + (d * T + t) * B + o_b, mask=active, other=0) != 0    # [BB]
        # h_in: h0 where this step starts afresh, else h_t of the step before (y there).
        o_yp = ((t_prev * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
        b_yp = tl.load(p_y + o_yp, mask=ma & ~st[:, None], other=0.0).to(tl.float32)
        b_hin = tl.where(st[:, None], b_h0, b_yp)
        if ZONEOUT:   # h_t = k h_in + (1 − k) h'
            b_k = tl.load(p_keep + ((d * T + t) * B + o_b)[:, None] * H + o_j[None, :], mask=ma,
                          other=0.0)
            b_direct = b_k * b_dh                                                # → h_in
            b_dh = (1.0 - b_k) * b_dh                                            # → h'
        else:
            b_direct = zero
        o_w = ((d * T + t) * B + o_b) * W                                        # [BB]
        p_w = p_ws + o_w[:, None] + o_j[None, :]
        b_r = tl.load(p_w, mask=ma, other=0.0)
        b_z = tl.load(p_w + H, mask=ma, other=0.0)
        b_n = tl.load(p_w + 2 * H, mask=ma, other=0.0)
        a_hn = tl.load(p_w + 3 * H, mask=ma, other=0.0)
        b_direct = tl.where(ma, b_direct + b_dh * b_z, 0.0)
        g_n = tl.where(ma, b_dh * (1.0 - b_z) * (1.0 - b_n * b_n), 0.0)
        g_z = tl.where(ma, b_dh * (b_hin - b_n) * b_z * (1.0 - b_z), 0.0)
        g_r = tl.where(ma, g_n * a_hn * b_r * (1.0 - b_r), 0.0)
        acc_dh0 += tl.where(st[:, None], b_direct, 0.0)
        carry = tl.where(active[:, None], b_direct, carry)
        o_g = ((d * T + t) * B + o_b)[:, None] * N + o_j[None, :]                # [BB, HP]
        tl.store(p_dgin + o_g, g_r, mask=ma)
        tl.store(p_dgin + o_g + H, g_z, mask=ma)
        tl.store(p_dgin + o_g + 2 * H, g_n, mask=ma)
        da_r = g_r                     # ∂L/∂a_h, a_h = (LN(rec) ⊙ γ_hh or rec) + b_hh
        da_z = g_z
        da_n = g_n * b_r
        acc_br += da_r
        acc_bz += da_z
        acc_bn += da_n
        if LAYER_NORM:
            # Through the gain, then the LN: two row means over all 3H columns, in-program.
            n_r = tl.load(p_w + 4 * H, mask=ma, other=0.0)
            n_z = tl.load(p_w + 5 * H, mask=ma, other=0.0)
            n_n = tl.load(p_w + 6 * H, mask=ma, other=0.0)
            rstd = tl.load(p_ws + o_w + 7 * H, mask=active, other=0.0)
            acc_gr += da_r * n_r
            acc_gz += da_z * n_z
            acc_gn += da_n * n_n
            da_r = da_r * g_hr
            da_z = da_z * g_hz
            da_n = da_n * g_hn
            mean_dn = (tl.sum(da_r, axis=1) + tl.sum(da_z, axis=1) + tl.sum(da_n, axis=1)) / N
            mean_dnn = (tl.sum(da_r * n_r, axis=1) + tl.sum(da_z * n_z, axis=1)
                        + tl.sum(da_n * n_n, axis=1)) / N
            da_r = tl.where(ma, ln_grad(da_r, n_r, rstd, mean_dn, mean_dnn), 0.0)
            da_z = tl.where(ma, ln_grad(da_z, n_z, rstd, mean_dn, mean_dnn), 0.0)
            da_n = tl.where(ma, ln_grad(da_n, n_n, rstd, mean_dn, mean_dnn), 0.0)
        tl.store(p_dghid + o_g, da_r, mask=ma)
        tl.store(p_dghid + o_g + H, da_z, mask=ma)
        tl.store(p_dghid + o_g + 2 * H, da_n, mask=ma)
        rec_new = (mm(da_r, w_r, DOT_FP32, PRECISION) + mm(da_z, w_z, DOT_FP32, PRECISION)
                   + mm(da_n, w_n, DOT_FP32, PRECISION))
        rec = tl.where(active[:, None], rec_new, rec)
        cut = tl.where(active, st, cut)
    tl.store(p_dh0 + o_state, acc_dh0, mask=m)
    o_a = (d * B + o_b)[:, None] * N + o_j[None, :]
    tl.store(p_dbhh + o_a, acc_br, mask=m)
    tl.store(p_dbhh + o_a + H, acc_bz, mask=m)
    tl.store(p_dbhh + o_a + 2 * H, acc_bn, mask=m)
    if LAYER_NORM:
        tl.store(p_dgain + o_a, acc_gr, mask=m)
        tl.store(p_dgain + o_a + H, acc_gz, mask=m)
        tl.store(p_dgain + o_a + 2 * H, acc_gn, mask=m)


# ---------------------------------------------------------------------------------- launchers

def forward(xproj, w_hh, b_hh, ln, h0, c0, starts, keep, lens, n_active, y, ws):
    """See ``layout``. One launch."""
    T, B = xproj.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("GRU", ln is not None, H)["W"]
    assert ws.shape[-1] == W, (ws.shape, W)
    dot_fp32, precision = dot_mode(w_hh.dtype)
    if B:
        gru_variant_persistent_fwd_kernel[(triton.cdiv(B, BB), D)](
            xproj, w_hh, xproj if b_hh is None else b_hh, xproj if ln is None else ln["ln_hh"],
            h0, starts.to(torch.uint8).contiguous(), keep if keep is not None else xproj,
            y, ws, lens, T, B, H, D, W,
            HAS_BHH=b_hh is not None, LAYER_NORM=ln is not None, ZONEOUT=keep is not None,
            EPS=layout.LN_EPS, HP=padded_hidden(H), BB=BB, DOT_FP32=dot_fp32,
            PRECISION=precision, num_warps=NUM_WARPS,
        )


def backward(dy, dh_n, dc_n, w_hh, b_hh, ln, ws, y, h0, c0, starts, keep, lens, n_active, alloc):
    """See ``layout``: the dict of gradients. One launch."""
    T, B = dy.shape[:2]
    D, N, H = w_hh.shape
    W = layout.columns("GRU", ln is not None, H)["W"]
    dot_fp32, precision = backward_dot_mode(w_hh.dtype)

    def zeros(*shape):
        return torch.zeros(shape, dtype=torch.float32, device=dy.device)

    has_ln = ln is not None
    dg_in, dg_hid = alloc((D, T, B, N)), alloc((D, T, B, N))
    dh0, db_hh = zeros(D, B, H), zeros(D, B, N)
    dgain = zeros(D, B, N) if has_ln else db_hh
    if B:
        gru_variant_persistent_bwd_kernel[(triton.cdiv(B, BB), D)](
            dy, dh_n, w_hh, ws, y, dh0 if ln is None else ln["ln_hh"], h0,
            starts.to(torch.uint8).contiguous(), keep if keep is not None else dh0,
            dg_in, dg_hid, dh0, dgain, db_hh, lens, T, B, H, D, W,
            LAYER_NORM=has_ln, ZONEOUT=keep is not None,
            HP=padded_hidden(H), BB=BB, DOT_FP32=dot_fp32, PRECISION=precision,
            num_warps=NUM_WARPS,
        )
    return {"dg_in": dg_in, "dg_hid": dg_hid, "dh0_direct": dh0, "dc0": None,
            "dgain_hh": dgain if has_ln else None, "db_hh": db_hh if b_hh is not None else None,
            "dgain_c": None, "dbias_c": None}
