"""Elman RNN (tanh or relu), batch-tiled persistent form: one launch for the whole sequence.

Dimension legend: see ``persistent_common`` (T, B, D, H, HP, BB; G = 1).

Forward with W_hh and h in registers: ``h' = act(xproj[t, b, d] + h @ W_hh[d]ᵀ)``; nothing is
saved but y. Backward carries ``rec = dG(s+1) @ W_hh[d]`` in registers:
``dG = (dy + (last ? dh_n : rec)) act'(h)`` with act' written from the output h = y[t].
"""

from types import SimpleNamespace

import triton
import triton.language as tl

from .launch_common import dot_mode
from .persistent_common import load_square, mm, padded_hidden, step_times, tile_rows
from .rnn_step import GATES, WORKSPACE_COLUMNS, split_biases
from .cell_math import rnn_activation, rnn_activation_grad

# One register tile of HP×HP; measured as in lstm_persistent (ptxas, sm_90, 8 warps). TF32,
# bf16, fp16: HP=128 fits (≤ 193 registers). IEEE fp32: HP=128 forward spills 4528 bytes (W
# leaves the registers entirely); HP=64 fits (253/150).
MAX_HIDDEN = {"fp32-tf32": 128, "fp32-ieee": 64, "fp16": 128, "bf16": 128}
NUM_WARPS = 8
BB = 16


@triton.jit
def rnn_persistent_fwd_kernel(
    p_xproj, p_whh, p_h0, p_y, p_len, T, B, H, D,
    RELU: tl.constexpr, HP: tl.constexpr, BB: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    w = load_square(p_whh, d * H * H, o_j, o_j, H, True)                         # [HP(k), HP(j)]
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]
    b_h = tl.load(p_h0 + o_state, mask=m_row[:, None] & m_j[None, :], other=0.0).to(tl.float32)
    for s in range(0, n_steps):
        active, t, _ = step_times(s, d, lens, m_row)
        ma = active[:, None] & m_j[None, :]
        o_y = ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
        b_a = mm(b_h, w, DOT_FP32, PRECISION) + tl.load(p_xproj + o_y, mask=ma, other=0.0).to(tl.float32)
        h_new = rnn_activation(b_a, RELU)
        tl.store(p_y + o_y, h_new.to(p_y.dtype.element_ty), mask=ma)
        b_h = tl.where(active[:, None], h_new, b_h)


@triton.jit
def rnn_persistent_bwd_kernel(
    p_dy, p_dhn, p_whh, p_y, p_dg, p_len, T, B, H, D,
    RELU: tl.constexpr, HP: tl.constexpr, BB: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    d, o_b, m_row, lens, o_j, m_j, n_steps = tile_rows(p_len, B, BB, HP, H)
    w = load_square(p_whh, d * H * H, o_j, o_j, H, False)                        # [HP(j), HP(k)]
    o_state = (d * B + o_b)[:, None] * H + o_j[None, :]
    b_dhn = tl.load(p_dhn + o_state, mask=m_row[:, None] & m_j[None, :], other=0.0).to(tl.float32)
    rec = tl.zeros([BB, HP], tl.float32)
    for s_back in range(0, n_steps):
        s = n_steps - 1 - s_back
        active, t, _ = step_times(s, d, lens, m_row)
        ma = active[:, None] & m_j[None, :]
        o_y = ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :]
        b_dh = tl.load(p_dy + o_y, mask=ma, other=0.0).to(tl.float32) \
            + tl.where((s == lens - 1)[:, None], b_dhn, rec)
        b_h = tl.load(p_y + o_y, mask=ma, other=0.0).to(tl.float32)
        b_g = b_dh * rnn_activation_grad(b_h, RELU)
        tl.store(p_dg + (((d * T + t) * B + o_b) * H)[:, None] + o_j[None, :], b_g, mask=ma)
        rec = tl.where(active[:, None], mm(b_g, w, DOT_FP32, PRECISION), rec)


# ---------------------------------------------------------------------------------- launchers

def _make(relu):
    def forward(xproj, w_hh, b_hh, h0, c0, lens, n_active, y, ws):
        """One launch over all steps; same outputs as ``rnn_step``'s forward."""
        D, B, H = h0.shape
        dot_fp32, precision = dot_mode(w_hh.dtype)
        if B:
            rnn_persistent_fwd_kernel[(triton.cdiv(B, BB), D)](
                xproj, w_hh, h0, y, lens, len(n_active), B, H, D, RELU=relu,
                HP=padded_hidden(H), BB=BB, DOT_FP32=dot_fp32, PRECISION=precision,
                num_warps=NUM_WARPS,
            )

    def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc):
        """One launch over all steps; same outputs as ``rnn_step``'s backward."""
        D, B, H = h0.shape
        T = len(n_active)
        dot_fp32, precision = dot_mode(w_hh.dtype, backward=True)
        dg = alloc((D, T, B, H))
        if B:
            rnn_persistent_bwd_kernel[(triton.cdiv(B, BB), D)](
                dy, dh_n, w_hh, y, dg, lens, T, B, H, D, RELU=relu,
                HP=padded_hidden(H), BB=BB, DOT_FP32=dot_fp32, PRECISION=precision,
                num_warps=NUM_WARPS,
            )
        return {"dg_in": dg, "dg_hid": dg, "dh_carry": None, "dc": None}

    return SimpleNamespace(GATES=GATES, WORKSPACE_COLUMNS=WORKSPACE_COLUMNS, MAX_HIDDEN=MAX_HIDDEN,
                           split_biases=split_biases, forward=forward, backward=backward)


TANH = _make(relu=False)
RELU = _make(relu=True)
