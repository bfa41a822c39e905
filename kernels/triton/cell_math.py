"""The cells' gate equations, forward and backward, shared by the step and persistent kernels.

Every argument is an fp32 block of the same shape (``[BB, BH]`` or ``[BB, HP]``); the
derivatives are written from the activations' outputs, as in ``fusedrnn.reference``.
"""

import triton
import triton.language as tl

from .step_common import sigmoid, tanh


@triton.jit
def lstm_forward(a_i, a_f, a_g, a_o, c_prev):
    """Pre-activations → ``(i, f, g, o, c)``; the new h is ``o * tanh(c)``."""
    i = sigmoid(a_i)
    f = sigmoid(a_f)
    g = tanh(a_g)
    o = sigmoid(a_o)
    return i, f, g, o, f * c_prev + i * g


@triton.jit
def lstm_backward(dh, dc, i, f, g, o, tanh_c, c_prev):
    """``(dG_i, dG_f, dG_g, dG_o, dc_total)`` from ∂L/∂h (here: of o·tanh c) and ∂L/∂c; the
    gradient for c_prev is ``dc_total * f``. (Returning that product instead keeps one more
    block live across the persistent backward's dots: ptxas then spills 80 bytes for bf16.)"""
    dc_total = dc + dh * o * (1.0 - tanh_c * tanh_c)
    return (dc_total * g * i * (1.0 - i), dc_total * c_prev * f * (1.0 - f),
            dc_total * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o), dc_total)


@triton.jit
def gru_forward(x_r, x_z, x_n, gh_r, gh_z, ghn, h_prev):
    """Input and recurrent parts (``ghn`` includes b_hn) → ``(r, z, n, h)``."""
    r = sigmoid(x_r + gh_r)
    z = sigmoid(x_z + gh_z)
    n = tanh(x_n + r * ghn)
    return r, z, n, (1.0 - z) * n + z * h_prev


@triton.jit
def gru_backward(dh, r, z, n, ghn, h_prev):
    """``(dG_r, dG_z, dG_n, direct)``: gate pre-activation gradients seen by the input
    projection, and ``dh z``, the gradient that reaches h_prev without the matmul. The
    recurrent product sees ``dG_n * r`` in place of ``dG_n``."""
    dg_n = dh * (1.0 - z) * (1.0 - n * n)
    dg_z = dh * (h_prev - n) * z * (1.0 - z)
    return dg_n * ghn * r * (1.0 - r), dg_z, dg_n, dh * z


@triton.jit
def rnn_activation(a, RELU: tl.constexpr):
    if RELU:
        return tl.maximum(a, 0.0)
    return tanh(a)


@triton.jit
def rnn_activation_grad(h, RELU: tl.constexpr):
    """act'(a) written from h = act(a): [h > 0] for relu, 1 - h² for tanh."""
    if RELU:
        return tl.where(h > 0, 1.0, 0.0)
    return 1.0 - h * h
