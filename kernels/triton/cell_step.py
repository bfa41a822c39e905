"""Single-step cells (``fusedrnn.LSTMCell`` / ``GRUCell`` / ``RNNCell``): one fused Triton
launch forward, one for the gate part of backward, with their launchers.

Dimension legend:
    B   batch rows                    In  input features           H   hidden units
    G   gates (LSTM 4, GRU 3, RNN 1)  BB  batch tile   BH  hidden tile   BK  reduction chunk

Unlike the sequence step kernels (``<cell>_step.py``), nothing is projected beforehand: one
program (batch tile, hidden tile j) computes *both* products for all gates of its hidden
units, adds the biases and applies the cell, so a decode-loop step is one launch:

    a_g   = x[b, :] @ W_ih[g*H+j, :]ᵀ + b_ih[g*H+j] + h[b, :] @ W_hh[g*H+j, :]ᵀ + b_hh[g*H+j]
    LSTM  c' = σ(a_f) c + σ(a_i) tanh(a_g)      h' = σ(a_o) tanh(c')      ws = (i f g o c') fp32
    GRU   the input and recurrent parts of n stay apart (the reset gate scales the latter):
          n = tanh(x_n + r (gh_n + b_hn))      h' = (1 - z) n + z h         ws = (r z n ghn) fp32
    RNN   h' = act(a)                                                       ws = h' in fp32

Backward (one launch, same tiles) turns ∂L/∂h' (and ∂L/∂c') plus the saved activations into
the gate pre-activation gradients ``dG [B, G*H]`` fp32 (``cell_math``, the equations shared
with every other kernel family), and the part of ∂L/∂h (GRU: ``dh' z``) or ∂L/∂c (LSTM:
``dc_total f``) that bypasses the products. ``dx = dG W_ih``, ``dh = dG W_hh (+ direct)`` and the
weight gradients are GEMMs on the host side (``fusedrnn.backends.cell.triton_step``).
Offsets are int64 (``B * G * H`` can pass 2³¹ in the workspace of a wide, large batch).
"""

import torch
import triton
import triton.language as tl

from .cell_math import (gru_backward, gru_forward, lstm_backward, lstm_forward, rnn_activation,
                        rnn_activation_grad)
from .launch_common import BB, BH, BK, compiled_dot_mode, interpreting
from .step_common import rows_dot, tanh

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
WORKSPACE_COLUMNS = {"LSTM": 5, "GRU": 4, "RNN_TANH": 1, "RNN_RELU": 1}  # in units of H


@triton.jit
def _tile(BB: tl.constexpr, BH: tl.constexpr, B, H):
    """Row ids ``o_b [BB]`` (int64), their mask, column ids ``o_j [BH]``, their mask, tile mask."""
    o_b = (tl.program_id(0) * BB + tl.arange(0, BB)).to(tl.int64)
    o_j = tl.program_id(1) * BH + tl.arange(0, BH)
    m_b = o_b < B
    m_j = o_j < H
    return o_b, m_b, o_j, m_j, m_b[:, None] & m_j[None, :]


@triton.jit
def _product(acc, p_a, o_b, m_b, K, p_w, p_bias, g, o_j, m_j, H,
             HAS_BIAS: tl.constexpr, BK: tl.constexpr, DOT_FP32: tl.constexpr,
             PRECISION: tl.constexpr):
    """``acc + A[rows, :K] @ W[g*H+j, :K]ᵀ (+ bias[g*H+j])`` for the tile, fp32 ``[BB, BH]``.
    Chaining the input and the recurrent product into one accumulator keeps one tile live per
    gate instead of two."""
    o_w = (g * H + o_j).to(tl.int64) * K                                           # [BH]
    acc = rows_dot(acc, p_a, o_b * K, m_b, K, p_w, o_w, m_j, 1, BK, DOT_FP32, PRECISION, "")
    if HAS_BIAS:
        acc += tl.load(p_bias + g * H + o_j, mask=m_j, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _gate(acc, p_x, p_h, o_b, m_b, In, p_wih, p_whh, p_bih, p_bhh, g, o_j, m_j, H,
          HAS_BIAS: tl.constexpr, BK: tl.constexpr, DOT_FP32: tl.constexpr,
          PRECISION: tl.constexpr):
    """Gate g's whole pre-activation ``x W_ih,gᵀ + b_ih,g + h W_hh,gᵀ + b_hh,g`` (+ acc)."""
    acc = _product(acc, p_x, o_b, m_b, In, p_wih, p_bih, g, o_j, m_j, H, HAS_BIAS, BK, DOT_FP32,
                   PRECISION)
    return _product(acc, p_h, o_b, m_b, H, p_whh, p_bhh, g, o_j, m_j, H, HAS_BIAS, BK, DOT_FP32,
                    PRECISION)


@triton.jit
def lstm_cell_fwd_kernel(
    p_x, p_h, p_c, p_wih, p_whh, p_bih, p_bhh, p_h_out, p_c_out, p_ws, B, In, H,
    SAVE: tl.constexpr, HAS_BIAS: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr,
    BK: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    o_b, m_b, o_j, m_j, m = _tile(BB, BH, B, H)
    zero = tl.zeros([BB, BH], tl.float32)
    a_i = _gate(zero, p_x, p_h, o_b, m_b, In, p_wih, p_whh, p_bih, p_bhh, 0, o_j, m_j, H,
                HAS_BIAS, BK, DOT_FP32, PRECISION)                              # [BB, BH]
    a_f = _gate(zero, p_x, p_h, o_b, m_b, In, p_wih, p_whh, p_bih, p_bhh, 1, o_j, m_j, H,
                HAS_BIAS, BK, DOT_FP32, PRECISION)
    a_g = _gate(zero, p_x, p_h, o_b, m_b, In, p_wih, p_whh, p_bih, p_bhh, 2, o_j, m_j, H,
                HAS_BIAS, BK, DOT_FP32, PRECISION)
    a_o = _gate(zero, p_x, p_h, o_b, m_b, In, p_wih, p_whh, p_bih, p_bhh, 3, o_j, m_j, H,
                HAS_BIAS, BK, DOT_FP32, PRECISION)
    o_state = o_b[:, None] * H + o_j[None, :]                                     # [BB, BH]
    b_c_prev = tl.load(p_c + o_state, mask=m, other=0.0).to(tl.float32)
    b_i, b_f, b_g, b_o, b_c = lstm_forward(a_i, a_f, a_g, a_o, b_c_prev)
    tl.store(p_h_out + o_state, (b_o * tanh(b_c)).to(p_h_out.dtype.element_ty), mask=m)
    tl.store(p_c_out + o_state, b_c.to(p_c_out.dtype.element_ty), mask=m)
    if SAVE:
        p_w = p_ws + (o_b * (5 * H))[:, None] + o_j[None, :]
        tl.store(p_w, b_i, mask=m)
        tl.store(p_w + H, b_f, mask=m)
        tl.store(p_w + 2 * H, b_g, mask=m)
        tl.store(p_w + 3 * H, b_o, mask=m)
        tl.store(p_w + 4 * H, b_c, mask=m)


@triton.jit
def gru_cell_fwd_kernel(
    p_x, p_h, p_wih, p_whh, p_bih, p_bhh, p_h_out, p_ws, B, In, H,
    SAVE: tl.constexpr, HAS_BIAS: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr,
    BK: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    o_b, m_b, o_j, m_j, m = _tile(BB, BH, B, H)
    zero = tl.zeros([BB, BH], tl.float32)
    # r and z take the whole pre-activation; n keeps its input part x_n and its recurrent part
    # gh_n (= h W_hn + b_hn) apart, since the reset gate scales only the latter.
    a_r = _gate(zero, p_x, p_h, o_b, m_b, In, p_wih, p_whh, p_bih, p_bhh, 0, o_j, m_j, H,
                HAS_BIAS, BK, DOT_FP32, PRECISION)                              # [BB, BH]
    a_z = _gate(zero, p_x, p_h, o_b, m_b, In, p_wih, p_whh, p_bih, p_bhh, 1, o_j, m_j, H,
                HAS_BIAS, BK, DOT_FP32, PRECISION)
    x_n = _product(zero, p_x, o_b, m_b, In, p_wih, p_bih, 2, o_j, m_j, H, HAS_BIAS, BK,
                   DOT_FP32, PRECISION)
    gh_n = _product(zero, p_h, o_b, m_b, H, p_whh, p_bhh, 2, o_j, m_j, H, HAS_BIAS, BK,
                    DOT_FP32, PRECISION)
    o_state = o_b[:, None] * H + o_j[None, :]
    b_h_prev = tl.load(p_h + o_state, mask=m, other=0.0).to(tl.float32)
    b_r, b_z, b_n, b_h = gru_forward(a_r, a_z, x_n, zero, zero, gh_n, b_h_prev)
    tl.store(p_h_out + o_state, b_h.to(p_h_out.dtype.element_ty), mask=m)
    if SAVE:
        p_w = p_ws + (o_b * (4 * H))[:, None] + o_j[None, :]
        tl.store(p_w, b_r, mask=m)
        tl.store(p_w + H, b_z, mask=m)
        tl.store(p_w + 2 * H, b_n, mask=m)
        tl.store(p_w + 3 * H, gh_n, mask=m)


@triton.jit
def rnn_cell_fwd_kernel(
    p_x, p_h, p_wih, p_whh, p_bih, p_bhh, p_h_out, p_ws, B, In, H,
    RELU: tl.constexpr, SAVE: tl.constexpr, HAS_BIAS: tl.constexpr, BB: tl.constexpr,
    BH: tl.constexpr, BK: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    o_b, m_b, o_j, m_j, m = _tile(BB, BH, B, H)
    a = _gate(tl.zeros([BB, BH], tl.float32), p_x, p_h, o_b, m_b, In, p_wih, p_whh, p_bih, p_bhh,
              0, o_j, m_j, H, HAS_BIAS, BK, DOT_FP32, PRECISION)                  # [BB, BH]
    b_h = rnn_activation(a, RELU)
    o_state = o_b[:, None] * H + o_j[None, :]
    tl.store(p_h_out + o_state, b_h.to(p_h_out.dtype.element_ty), mask=m)
    if SAVE:
        tl.store(p_ws + o_state, b_h, mask=m)


@triton.jit
def lstm_cell_bwd_kernel(
    p_dh, p_dc, p_ws, p_c, p_dg, p_dc_prev, B, H, BB: tl.constexpr, BH: tl.constexpr,
):
    """``dG [B, 4H]`` (i f g o) fp32 and ``dc_prev = dc_total f`` from ∂L/∂h', ∂L/∂c'."""
    o_b, _, o_j, _, m = _tile(BB, BH, B, H)
    o_state = o_b[:, None] * H + o_j[None, :]
    p_w = p_ws + (o_b * (5 * H))[:, None] + o_j[None, :]
    b_i = tl.load(p_w, mask=m, other=0.0)
    b_f = tl.load(p_w + H, mask=m, other=0.0)
    b_g = tl.load(p_w + 2 * H, mask=m, other=0.0)
    b_o = tl.load(p_w + 3 * H, mask=m, other=0.0)
    b_tc = tanh(tl.load(p_w + 4 * H, mask=m, other=0.0))
    g_i, g_f, g_g, g_o, b_dc = lstm_backward(
        tl.load(p_dh + o_state, mask=m, other=0.0).to(tl.float32),
        tl.load(p_dc + o_state, mask=m, other=0.0).to(tl.float32),
        b_i, b_f, b_g, b_o, b_tc, tl.load(p_c + o_state, mask=m, other=0.0).to(tl.float32))
    p_g = p_dg + (o_b * (4 * H))[:, None] + o_j[None, :]
    tl.store(p_g, g_i, mask=m)
    tl.store(p_g + H, g_f, mask=m)
    tl.store(p_g + 2 * H, g_g, mask=m)
    tl.store(p_g + 3 * H, g_o, mask=m)
    tl.store(p_dc_prev + o_state, (b_dc * b_f).to(p_dc_prev.dtype.element_ty), mask=m)


@triton.jit
def gru_cell_bwd_kernel(
    p_dh, p_ws, p_h, p_dgi, p_dgh, p_direct, B, H, BB: tl.constexpr, BH: tl.constexpr,
):
    """``dGi``, ``dGh [B, 3H]`` fp32 (they differ in n: the recurrent product sees dG_n r) and
    ``direct = dh' z``, the gradient reaching h without the product."""
    o_b, _, o_j, _, m = _tile(BB, BH, B, H)
    o_state = o_b[:, None] * H + o_j[None, :]
    p_w = p_ws + (o_b * (4 * H))[:, None] + o_j[None, :]
    b_r = tl.load(p_w, mask=m, other=0.0)
    b_dr, b_dz, b_dn, b_direct = gru_backward(
        tl.load(p_dh + o_state, mask=m, other=0.0).to(tl.float32), b_r,
        tl.load(p_w + H, mask=m, other=0.0), tl.load(p_w + 2 * H, mask=m, other=0.0),
        tl.load(p_w + 3 * H, mask=m, other=0.0),
        tl.load(p_h + o_state, mask=m, other=0.0).to(tl.float32))
    o_g = (o_b * (3 * H))[:, None] + o_j[None, :]
    tl.store(p_dgi + o_g, b_dr, mask=m)
    tl.store(p_dgi + o_g + H, b_dz, mask=m)
    tl.store(p_dgi + o_g + 2 * H, b_dn, mask=m)
    tl.store(p_dgh + o_g, b_dr, mask=m)
    tl.store(p_dgh + o_g + H, b_dz, mask=m)
    tl.store(p_dgh + o_g + 2 * H, b_dn * b_r, mask=m)
    tl.store(p_direct + o_state, b_direct, mask=m)


@triton.jit
def rnn_cell_bwd_kernel(p_dh, p_ws, p_dg, B, H, RELU: tl.constexpr, BB: tl.constexpr,
                        BH: tl.constexpr):
    """``dG [B, H] = dh' act'(a)`` fp32, act' written from the saved fp32 h'."""
    o_b, _, o_j, _, m = _tile(BB, BH, B, H)
    o_state = o_b[:, None] * H + o_j[None, :]
    b_dh = tl.load(p_dh + o_state, mask=m, other=0.0).to(tl.float32)
    b_h = tl.load(p_ws + o_state, mask=m, other=0.0)
    tl.store(p_dg + o_state, b_dh * rnn_activation_grad(b_h, RELU), mask=m)


# ---------------------------------------------------------------- launchers


def cell_dot_mode(dtype):
    """``(DOT_FP32, PRECISION)`` of the forward kernel's dots. torch's cells are cuBLAS GEMMs,
    so fp32 cells use TF32 exactly when ``torch.backends.cuda.matmul.allow_tf32`` says so
    (default off), not cuDNN's switch that the sequence kernels follow; the backward's GEMMs
    (``backends/cell/triton_step.py``) follow the same flag. fp32 IEEE under the interpreter."""
    if interpreting():
        return True, "ieee"
    return compiled_dot_mode(dtype, False, torch.backends.cuda.matmul.allow_tf32)


def _grid(B, H):
    return (triton.cdiv(B, BB), triton.cdiv(H, BH))


def forward(mode, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, ws):
    """One launch: writes ``h_out [B, H]`` (and ``c_out [B, H]``, LSTM) in the input's dtype and
    ``ws [B, WORKSPACE_COLUMNS[mode] * H]`` fp32, or nothing more when ``ws`` is None (no
    backward will follow: inference skips those stores). ``x [B, In]``, ``h``/``c [B, H]``,
    ``w_ih [G*H, In]``, ``w_hh [G*H, H]``, ``b_ih``/``b_hh [G*H]`` or None; all dense."""
    B, In = x.shape
    H = w_hh.shape[1]
    if B == 0 or H == 0:   # nothing to write (torch allows both); an empty grid cannot launch
        return
    dot_fp32, precision = cell_dot_mode(w_hh.dtype)
    has_bias = b_ih is not None
    # Without bias the pointers are never read (HAS_BIAS is a constexpr); any tensor will do.
    b_ih, b_hh = (b_ih, b_hh) if has_bias else (w_ih, w_hh)
    save = ws is not None
    ws = ws if save else h_out   # likewise never written with SAVE off
    common = dict(SAVE=save, HAS_BIAS=has_bias, BB=BB, BH=BH, BK=BK, DOT_FP32=dot_fp32,
                  PRECISION=precision)
    if mode == "LSTM":
        lstm_cell_fwd_kernel[_grid(B, H)](x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, ws,
                                          B, In, H, **common)
    elif mode == "GRU":
        gru_cell_fwd_kernel[_grid(B, H)](x, h, w_ih, w_hh, b_ih, b_hh, h_out, ws, B, In, H,
                                         **common)
    else:
        rnn_cell_fwd_kernel[_grid(B, H)](x, h, w_ih, w_hh, b_ih, b_hh, h_out, ws, B, In, H,
                                         RELU=mode == "RNN_RELU", **common)


def backward_gates(mode, ws, h, c, dh, dc, alloc):
    """One launch. Returns ``(dg_in, dg_hid, bypass)``: the gate pre-activation gradients seen
    by the input and the recurrent product (``[B, G*H]`` fp32; the same tensor except for the
    GRU) and the part of the state gradient that skips the products: LSTM ``dc_prev`` (``c``'s
    dtype), GRU ``dh' z`` (fp32), RNN None. ``alloc(shape, dtype)`` makes the outputs."""
    B, H = h.shape
    grid = _grid(B, H)
    launch = B > 0 and H > 0   # as in forward: empty outputs, nothing to launch
    if mode == "LSTM":
        dg = alloc((B, 4 * H), torch.float32)
        dc_prev = alloc((B, H), c.dtype)
        if launch:
            lstm_cell_bwd_kernel[grid](dh, dc, ws, c, dg, dc_prev, B, H, BB=BB, BH=BH)
        return dg, dg, dc_prev
    if mode == "GRU":
        dgi = alloc((B, 3 * H), torch.float32)
        dgh = alloc((B, 3 * H), torch.float32)
        direct = alloc((B, H), torch.float32)
        if launch:
            gru_cell_bwd_kernel[grid](dh, ws, h, dgi, dgh, direct, B, H, BB=BB, BH=BH)
        return dgi, dgh, direct
    dg = alloc((B, H), torch.float32)
    if launch:
        rnn_cell_bwd_kernel[grid](dh, ws, dg, B, H, RELU=mode == "RNN_RELU", BB=BB, BH=BH)
    return dg, dg, None
