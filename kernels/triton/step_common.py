"""Pieces shared by the per-timestep (``triton-step``) kernels of every cell.

Dimension legend (all kernel files of this family):
    T   sequence length (padded)            B   batch (rows sorted by length, longest first)
    D   directions (1 or 2)                 s   processing step, 0 … T-1
    H   cell width (hidden units)           Hr  width of h (= H; P with an LSTM projection)
    G   gates (LSTM 4, GRU 3, RNN 1)        In  input features
    BB  batch tile   BH  hidden tile   BK  reduction chunk

Time indexing. Direction 0 processes step s at time t = s. Direction 1 (reverse) starts at
each sequence's *own* last element: row b processes step s at time t = len_b - 1 - s. Rows
are sorted by length, so the rows still running at step s are a prefix ``b < n_active`` and
the grid covers only them. A row's last forward step (its first backward step) is
s = len_b - 1.

Strided "state" operands. The previous hidden state of step s is h0 at s = 0 and the output
y at the previous time otherwise; the launcher passes a base pointer and (direction, time,
row) strides, with a time stride of 0 for h0, so the kernel needs no branch on s.
"""

import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # libdevice's tanh is unavailable under the Triton interpreter, so: 2σ(2x) - 1. Its
    # subtraction leaves an absolute error of ~6e-8, i.e. a large *relative* error for small
    # |x| (measured: 1.2e-3 at |x|≈1e-4), so below |x| = 0.05 the odd Taylor series takes over
    # (truncation 17x⁷/315 < 5e-11 relative there; the identity's relative error is ≤ 1.2e-6).
    x2 = x * x
    series = x * (1.0 - x2 * (1.0 / 3.0) + x2 * x2 * (2.0 / 15.0))
    return tl.where(tl.abs(x) < 0.05, series, 2.0 * sigmoid(2.0 * x) - 1.0)


@triton.jit
def step_tile(b_tile, n_tile, d, s, p_len, n_active, n_cols, BB: tl.constexpr, BN: tl.constexpr):
    """Tile (batch tile ``b_tile``, column tile ``n_tile``, direction ``d``) at step ``s``.

    Returns ``d`` (direction, int64 so every offset built from it is int64: T*B*G*H can pass
    2³¹), ``o_b [BB]`` row ids, ``m_b`` row mask, ``t`` time of step s, ``t_prev`` / ``t_next``
    times of the steps before / after in processing order, ``last`` whether s is the row's
    final forward step (its first in backward), ``o_n [BN]`` column ids, ``m_n`` their mask and
    ``m [BB, BN]`` the tile mask.
    """
    d = d.to(tl.int64)
    o_b = b_tile * BB + tl.arange(0, BB)
    # Rows b < n_active run at step s (sorted by length); ``s < len`` says the same: a cheap
    # second guard for callers that compute n_active themselves (the hidden-split kernels).
    lens = tl.load(p_len + o_b, mask=o_b < n_active, other=0)
    m_b = (o_b < n_active) & (s < lens)
    direction = 1 - 2 * d                                 # +1 forward, -1 reverse
    t = tl.where(d == 0, s, lens - 1 - s).to(tl.int64)
    o_n = n_tile * BN + tl.arange(0, BN)
    m_n = o_n < n_cols
    m = m_b[:, None] & m_n[None, :]
    return d, o_b, m_b, t, t - direction, t + direction, s == lens - 1, o_n, m_n, m


@triton.jit
def rows_dot(acc, p_a, o_a, m_a, K, p_w, o_wn, m_n, stride_wk,
             BK: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
             CACHE: tl.constexpr):
    """``acc[BB, BN] += A[rows, :K] @ Wtile[:K, cols]``.

    ``o_a [BB]`` are the offsets of each A row (row-dependent times are folded in), ``o_wn [BN]``
    the offsets of each W column, ``stride_wk`` the step between consecutive k of W.
    ``DOT_FP32`` casts both operands to fp32 (the interpreter's bf16 dot is wrong; fp32 models).
    ``CACHE`` is A's load cache modifier: ".cg" where other programs wrote A during this launch
    (a hint: the pipeliner may issue the load as ``cp.async.ca``; see ``split_common``), ""
    otherwise. It has no default on purpose: Triton 3.6 (the GPU machine's) passes a nested
    jit function's string default as a plain ``str`` and fails to compile
    ("'str' object has no attribute 'type'"), which only its sm_90 compile check shows.
    """
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < K
        b_a = tl.load(p_a + o_a[:, None] + o_k[None, :], mask=m_a[:, None] & m_k[None, :], other=0.0,
                      cache_modifier=CACHE)
        b_w = tl.load(p_w + o_k[:, None] * stride_wk + o_wn[None, :], mask=m_k[:, None] & m_n[None, :],
                      other=0.0)                                               # [BK, BN]
        if DOT_FP32:
            acc = tl.dot(b_a.to(tl.float32), b_w.to(tl.float32), acc, input_precision=PRECISION)
        else:
            acc = tl.dot(b_a.to(b_w.dtype), b_w, acc)
    return acc
