"""Elman RNN (tanh or relu), one Triton launch per timestep: forward and BPTT step kernels.

Dimension legend: see ``step_common`` (T, B, D, H, G=1, BB, BH, BK).

Forward, program (batch tile, hidden tile j, direction d) at step s:
    h[t, b, j] = act(xproj[t, b, d, j] + h_prev[b, :] @ W_hh[d, j, :]ᵀ)
``xproj`` holds ``x W_ihᵀ + b_ih + b_hh``. Nothing else is saved: backward reads h back from y.

Backward at step s (s = T-1 … 0):
    dh       = dy[t, b] + (row's last step ? dh_n[b] : dG[t_next, b, :] @ W_hh[d, :, j])
    dG[t, b] = dh act'(h)          act' from the output: 1 - h² (tanh), [h > 0] (relu)
"""

from types import SimpleNamespace

import torch
import triton
import triton.language as tl

from .launch_common import BB, BH, BK, dot_mode, grid, state_operand
from .cell_math import rnn_activation, rnn_activation_grad
from .step_common import rows_dot, step_tile

GATES = 1
WORKSPACE_COLUMNS = 0


@triton.jit
def rnn_step_fwd(
    b_tile, j_tile, d,
    p_xproj, p_whh,
    p_h, sh_d, sh_t, sh_b,
    p_y, p_len, s, n_active, B, H, D,
    RELU: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """Forward of tile (b_tile, j_tile, d) at step s; ``CACHE`` as in ``rows_dot``."""
    d, o_b, m_b, t, t_prev, _, _, o_j, m_j, m = step_tile(
        b_tile, j_tile, d, s, p_len, n_active, H, BB, BH)

    o_h = d * sh_d + t_prev * sh_t + o_b * sh_b                                   # [BB]
    b_a = rows_dot(tl.zeros([BB, BH], tl.float32), p_h, o_h, m_b, H, p_whh, d * H * H + o_j * H,
                   m_j, 1, BK, DOT_FP32, PRECISION, CACHE)                        # [BB, BH]
    b_a += tl.load(p_xproj + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :], mask=m,
                   other=0.0).to(tl.float32)
    b_h = rnn_activation(b_a, RELU)
    p_out = p_y + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
    tl.store(p_out, b_h.to(p_y.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["s", "n_active"])
def rnn_step_fwd_kernel(
    p_xproj, p_whh, p_h, sh_d, sh_t, sh_b, p_y, p_len, s, n_active, B, H, D,
    RELU: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    rnn_step_fwd(tl.program_id(0), tl.program_id(1), tl.program_id(2), p_xproj, p_whh,
                 p_h, sh_d, sh_t, sh_b, p_y, p_len, s, n_active, B, H, D,
                 RELU, BB, BH, BK, DOT_FP32, PRECISION, "")


@triton.jit
def rnn_step_bwd(
    b_tile, j_tile, d,
    p_dy, p_dhn, p_whh, p_y, p_dg, p_len, s, n_active, T, B, H, D,
    RELU: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """Backward of tile (b_tile, j_tile, d) at step s; ``CACHE`` as in ``rows_dot``."""
    d, o_b, m_b, t, _, t_next, last, o_j, m_j, m = step_tile(
        b_tile, j_tile, d, s, p_len, n_active, H, BB, BH)

    o_gn = ((d * T + t_next) * B + o_b) * H                                       # [BB]
    rec = rows_dot(tl.zeros([BB, BH], tl.float32), p_dg, o_gn, m_b & (last == 0), H,
                   p_whh, d * H * H + o_j, m_j, H, BK, DOT_FP32, PRECISION, CACHE)
    b_dhn = tl.load(p_dhn + (d * B + o_b)[:, None] * H + o_j[None, :], mask=m, other=0.0)
    o_y = ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
    b_dh = tl.load(p_dy + o_y, mask=m, other=0.0).to(tl.float32) \
        + tl.where(last[:, None], b_dhn.to(tl.float32), rec)
    b_h = tl.load(p_y + o_y, mask=m, other=0.0).to(tl.float32)
    tl.store(p_dg + (((d * T + t) * B + o_b) * H)[:, None] + o_j[None, :],
             b_dh * rnn_activation_grad(b_h, RELU), mask=m)


@triton.jit(do_not_specialize=["s", "n_active"])
def rnn_step_bwd_kernel(
    p_dy, p_dhn, p_whh, p_y, p_dg, p_len, s, n_active, T, B, H, D,
    RELU: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    rnn_step_bwd(tl.program_id(0), tl.program_id(1), tl.program_id(2), p_dy, p_dhn, p_whh, p_y,
                 p_dg, p_len, s, n_active, T, B, H, D, RELU, BB, BH, BK, DOT_FP32, PRECISION, "")


# ---------------------------------------------------------------- launchers (the time loops)

def split_biases(dirs, H):
    """Both biases fold into the input projection: ``(xbias [D*H], None)``."""
    return torch.cat([p["b_ih"] + p["b_hh"] for p in dirs]), None


def _make(relu):
    def forward(xproj, w_hh, b_hh, h0, c0, lens, n_active, y, ws):
        """Forward step kernel for s = 0 … T-1, writing ``y [T, B, D*H]``."""
        D, B, H = h0.shape
        dot_fp32, precision = dot_mode(w_hh.dtype)
        for s in range(len(n_active)):
            if n_active[s] == 0:
                break
            rnn_step_fwd_kernel[grid(n_active[s], H, D)](
                xproj, w_hh, *state_operand(h0, y, s, D, B, H), y, lens, s, n_active[s], B, H, D,
                RELU=relu, BB=BB, BH=BH, BK=BK, DOT_FP32=dot_fp32, PRECISION=precision,
            )

    def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc):
        """Backward step kernel for s = T-1 … 0. Returns ``dg_in = dg_hid [D, T, B, H]``."""
        D, B, H = h0.shape
        T = len(n_active)
        dot_fp32, precision = dot_mode(w_hh.dtype, backward=True)
        dg = alloc((D, T, B, H))
        for s in reversed(range(T)):
            if n_active[s] == 0:
                continue
            rnn_step_bwd_kernel[grid(n_active[s], H, D)](
                dy, dh_n, w_hh, y, dg, lens, s, n_active[s], T, B, H, D,
                RELU=relu, BB=BB, BH=BH, BK=BK, DOT_FP32=dot_fp32, PRECISION=precision,
            )
        return {"dg_in": dg, "dg_hid": dg, "dh_carry": None, "dc": None}

    return SimpleNamespace(GATES=GATES, WORKSPACE_COLUMNS=WORKSPACE_COLUMNS,
                           split_biases=split_biases, forward=forward, backward=backward)


TANH = _make(relu=False)
RELU = _make(relu=True)
