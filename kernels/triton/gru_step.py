"""GRU, one Triton launch per timestep: forward and BPTT step kernels and their launchers.

Dimension legend: see ``step_common`` (T, B, D, H, G=3, BB, BH, BK).

Forward, program (batch tile, hidden tile j, direction d) at step s (gate order r z n):
    gh_g  = h_prev[b, :] @ W_hh[d, g*H+j, :]ᵀ                    (recurrent product, per gate)
    r     = σ(xproj_r + gh_r)       z = σ(xproj_z + gh_z)
    ghn   = gh_n + b_hn             n = tanh(xproj_n + r ghn)     (reset *after* the matmul)
    h     = (1 - z) n + z h_prev
    ws[d, t, b] = (r, z, n, ghn)  fp32
``xproj`` holds ``x W_ihᵀ + b_ih`` plus ``b_hr, b_hz`` (they add like the input bias); ``b_hn``
stays in the kernel because the reset gate multiplies it.

Backward at step s (s = T-1 … 0):
    dh     = dy[t, b] + (row's last step ? dh_n[b] : dGh[t_next, b, :] @ W_hh[d, :, j] + carry[b])
    dn_pre = dh (1 - z)(1 - n²)      dz_pre = dh (h_prev - n) σ'(z)      dr_pre = dn_pre ghn σ'(r)
    dGi[t, b] = (dr_pre, dz_pre, dn_pre)       dGh[t, b] = (dr_pre, dz_pre, dn_pre r)
    carry[b]  = dh z                            (the direct h_prev → h path, in place)
"""

import torch
import triton
import triton.language as tl

from .launch_common import BB, BH, BK, dot_mode, grid, state_operand
from .cell_math import gru_backward, gru_forward
from .step_common import rows_dot, step_tile

GATES = 3
WORKSPACE_COLUMNS = 4  # r z n ghn, in units of H


@triton.jit
def gru_step_fwd(
    b_tile, j_tile, d,
    p_xproj, p_whh, p_bhn,
    p_h, sh_d, sh_t, sh_b,
    p_y, p_ws, p_len, s, n_active, T, B, H, D,
    HAS_BHN: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """Forward of tile (b_tile, j_tile, d) at step s; ``CACHE`` as in ``rows_dot``."""
    d, o_b, m_b, t, t_prev, _, _, o_j, m_j, m = step_tile(
        b_tile, j_tile, d, s, p_len, n_active, H, BB, BH)

    o_h = d * sh_d + t_prev * sh_t + o_b * sh_b                                   # [BB]
    o_w = d * 3 * H * H + o_j * H                                                 # [BH]
    acc = tl.zeros([BB, BH], tl.float32)
    gh_r = rows_dot(acc, p_h, o_h, m_b, H, p_whh, o_w, m_j, 1, BK, DOT_FP32, PRECISION, CACHE)
    gh_z = rows_dot(acc, p_h, o_h, m_b, H, p_whh, o_w + H * H, m_j, 1, BK, DOT_FP32, PRECISION,
                    CACHE)
    gh_n = rows_dot(acc, p_h, o_h, m_b, H, p_whh, o_w + 2 * H * H, m_j, 1, BK, DOT_FP32, PRECISION,
                    CACHE)
    if HAS_BHN:
        gh_n += tl.load(p_bhn + d * H + o_j, mask=m_j, other=0.0).to(tl.float32)[None, :]
    p_xg = p_xproj + ((t * B + o_b) * (D * 3 * H) + d * 3 * H)[:, None] + o_j[None, :]
    b_h_prev = tl.load(p_h + o_h[:, None] + o_j[None, :], mask=m, other=0.0,
                       cache_modifier=CACHE).to(tl.float32)
    b_r, b_z, b_n, b_h = gru_forward(                                            # [BB, BH] each
        tl.load(p_xg, mask=m, other=0.0).to(tl.float32),
        tl.load(p_xg + H, mask=m, other=0.0).to(tl.float32),
        tl.load(p_xg + 2 * H, mask=m, other=0.0).to(tl.float32), gh_r, gh_z, gh_n, b_h_prev)

    p_w = p_ws + (((d * T + t) * B + o_b) * (4 * H))[:, None] + o_j[None, :]
    tl.store(p_w, b_r, mask=m)
    tl.store(p_w + H, b_z, mask=m)
    tl.store(p_w + 2 * H, b_n, mask=m)
    tl.store(p_w + 3 * H, gh_n, mask=m)
    p_out = p_y + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
    tl.store(p_out, b_h.to(p_y.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["s", "n_active"])
def gru_step_fwd_kernel(
    p_xproj, p_whh, p_bhn, p_h, sh_d, sh_t, sh_b, p_y, p_ws, p_len, s, n_active, T, B, H, D,
    HAS_BHN: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    gru_step_fwd(tl.program_id(0), tl.program_id(1), tl.program_id(2),
                 p_xproj, p_whh, p_bhn, p_h, sh_d, sh_t, sh_b, p_y, p_ws, p_len, s, n_active,
                 T, B, H, D, HAS_BHN, BB, BH, BK, DOT_FP32, PRECISION, "")


@triton.jit
def gru_step_bwd(
    b_tile, j_tile, d,
    p_dy, p_dhn, p_whh, p_ws,
    p_h, sh_d, sh_t, sh_b,
    p_dgi, p_dgh, p_carry, p_len, s, n_active, T, B, H, D,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """Backward of tile (b_tile, j_tile, d) at step s; ``CACHE`` as in ``rows_dot``."""
    d, o_b, m_b, t, t_prev, t_next, last, o_j, m_j, m = step_tile(
        b_tile, j_tile, d, s, p_len, n_active, H, BB, BH)

    o_gn = ((d * T + t_next) * B + o_b) * (3 * H)                                 # [BB]
    rec = rows_dot(tl.zeros([BB, BH], tl.float32), p_dgh, o_gn, m_b & (last == 0), 3 * H,
                   p_whh, d * 3 * H * H + o_j, m_j, H, BK, DOT_FP32, PRECISION, CACHE)
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]                           # [BB, BH]
    b_carry = tl.load(p_carry + o_state, mask=m, other=0.0, cache_modifier=CACHE)
    b_dhn = tl.load(p_dhn + o_state, mask=m, other=0.0).to(tl.float32)
    b_dy = tl.load(p_dy + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :], mask=m,
                   other=0.0).to(tl.float32)
    b_dh = b_dy + tl.where(last[:, None], b_dhn, rec + b_carry)

    p_w = p_ws + (((d * T + t) * B + o_b) * (4 * H))[:, None] + o_j[None, :]
    b_r = tl.load(p_w, mask=m, other=0.0)
    b_z = tl.load(p_w + H, mask=m, other=0.0)
    b_n = tl.load(p_w + 2 * H, mask=m, other=0.0)
    b_ghn = tl.load(p_w + 3 * H, mask=m, other=0.0)
    o_h = d * sh_d + t_prev * sh_t + o_b * sh_b
    b_h_prev = tl.load(p_h + o_h[:, None] + o_j[None, :], mask=m, other=0.0).to(tl.float32)

    b_dr, b_dz, b_dn, b_direct = gru_backward(b_dh, b_r, b_z, b_n, b_ghn, b_h_prev)
    o_g = (((d * T + t) * B + o_b) * (3 * H))[:, None] + o_j[None, :]
    tl.store(p_dgi + o_g, b_dr, mask=m)
    tl.store(p_dgi + o_g + H, b_dz, mask=m)
    tl.store(p_dgi + o_g + 2 * H, b_dn, mask=m)
    tl.store(p_dgh + o_g, b_dr, mask=m)
    tl.store(p_dgh + o_g + H, b_dz, mask=m)
    tl.store(p_dgh + o_g + 2 * H, b_dn * b_r, mask=m)
    tl.store(p_carry + o_state, b_direct, mask=m)


@triton.jit(do_not_specialize=["s", "n_active"])
def gru_step_bwd_kernel(
    p_dy, p_dhn, p_whh, p_ws, p_h, sh_d, sh_t, sh_b, p_dgi, p_dgh, p_carry, p_len, s, n_active,
    T, B, H, D, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    gru_step_bwd(tl.program_id(0), tl.program_id(1), tl.program_id(2),
                 p_dy, p_dhn, p_whh, p_ws, p_h, sh_d, sh_t, sh_b, p_dgi, p_dgh, p_carry, p_len,
                 s, n_active, T, B, H, D, BB, BH, BK, DOT_FP32, PRECISION, "")


# ---------------------------------------------------------------- launchers (the time loops)

def split_biases(dirs, H):
    """``(xbias [D*3H], b_hn [D, H])``: b_hr and b_hz fold into the input projection."""
    xbias = torch.cat([p["b_ih"] + torch.cat([p["b_hh"][:2 * H], p["b_hh"].new_zeros(H)])
                       for p in dirs])
    return xbias, torch.stack([p["b_hh"][2 * H:] for p in dirs]).contiguous()


def forward(xproj, w_hh, b_hn, h0, c0, lens, n_active, y, ws):
    """Forward step kernel for s = 0 … T-1: writes ``y [T, B, D*H]`` and ``ws [D, T, B, 4H]``."""
    D, T, B, _ = ws.shape
    H = w_hh.shape[2]
    dot_fp32, precision = dot_mode(w_hh.dtype)
    for s in range(T):
        if n_active[s] == 0:
            break
        gru_step_fwd_kernel[grid(n_active[s], H, D)](
            xproj, w_hh, w_hh if b_hn is None else b_hn, *state_operand(h0, y, s, D, B, H),
            y, ws, lens, s, n_active[s], T, B, H, D,
            HAS_BHN=b_hn is not None, BB=BB, BH=BH, BK=BK, DOT_FP32=dot_fp32, PRECISION=precision,
        )


def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc):
    """Backward step kernel for s = T-1 … 0. Returns ``dg_in``, ``dg_hid [D, T, B, 3H]`` and the
    direct-path carry ``[D, B, H]`` that ∂L/∂h0 adds to ``dg_hid[first] @ W_hh``."""
    D, T, B, _ = ws.shape
    H = w_hh.shape[2]
    dot_fp32, precision = dot_mode(w_hh.dtype, backward=True)
    dgi, dgh = alloc((D, T, B, 3 * H)), alloc((D, T, B, 3 * H))
    # A row's first backward step reads the carry only in tl.where's discarded branch; zeros
    # keep that branch finite (the interpreter warned about NaN arithmetic there).
    carry = torch.zeros((D, B, H), dtype=torch.float32, device=ws.device)
    for s in reversed(range(T)):
        if n_active[s] == 0:
            continue
        gru_step_bwd_kernel[grid(n_active[s], H, D)](
            dy, dh_n, w_hh, ws, *state_operand(h0, y, s, D, B, H), dgi, dgh, carry, lens, s,
            n_active[s], T, B, H, D, BB=BB, BH=BH, BK=BK, DOT_FP32=dot_fp32, PRECISION=precision,
        )
    return {"dg_in": dgi, "dg_hid": dgh, "dh_carry": carry, "dc": None}
