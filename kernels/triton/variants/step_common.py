"""Pieces shared by the row kernels of the variant step family (``<cell>_step`` in this folder).

Dimension legend (every kernel file of this family):
    T   sequence length (padded)            B   batch (rows sorted by length, longest first)
    D   directions (1 or 2)                 s   processing step, 0 … T-1
    H   hidden units                        HP  H rounded up to a power of two (tl.arange)
    G   gates (LSTM 4, GRU 3, RNN 1)        N   G*H, the LayerNorm width of the gates
    BB  rows per program

A row program owns BB whole rows (all G*H columns, one [BB, HP] block per gate), so the
LayerNorm row statistics are plain in-register reductions over those blocks: no atomics, no
second pass over memory. Time indexing is the classic step family's (``kernels/triton/
step_common``): direction 1 runs row b's step s at t = len_b − 1 − s.
"""

import triton
import triton.language as tl

from ..step_common import sigmoid, tanh  # noqa: F401  (re-exported for the cell files)


@triton.jit
def row_tile(b_tile, d, s, p_len, n_active, H, BB: tl.constexpr, HP: tl.constexpr):
    """Rows of program ``b_tile`` in direction ``d`` at step ``s``.

    Returns ``d`` (int64, so offsets built from it are int64), ``o_b [BB]`` row ids, ``m_b``
    rows that run, ``t`` / ``t_prev`` / ``t_next`` times of this step and of the steps before
    and after in processing order, ``last`` (s is the row's final step), ``o_j [HP]`` column
    ids within a gate, ``m [BB, HP]`` the block mask."""
    d = d.to(tl.int64)
    o_b = b_tile * BB + tl.arange(0, BB)
    lens = tl.load(p_len + o_b, mask=o_b < n_active, other=0)
    m_b = (o_b < n_active) & (s < lens)
    direction = 1 - 2 * d                                 # +1 forward, −1 reverse
    t = tl.where(d == 0, s, lens - 1 - s).to(tl.int64)
    o_j = tl.arange(0, HP)
    m = m_b[:, None] & (o_j < H)[None, :]
    return d, o_b, m_b, t, t - direction, t + direction, s == lens - 1, o_j, m


@triton.jit
def row_sum(x, m):
    """``[BB]``: Σ over the valid columns of a ``[BB, HP]`` block (masked columns count 0)."""
    return tl.sum(tl.where(m, x, 0.0), axis=1)


@triton.jit
def ln_rstd(sq_sum, N, EPS: tl.constexpr):
    """``1 / sqrt(var + eps)`` from ``Σ (x − μ)²`` over N columns (biased variance)."""
    return 1.0 / tl.sqrt(sq_sum / N + EPS)


@triton.jit
def ln_grad(dn, n, rstd, mean_dn, mean_dn_n):
    """One block of the LayerNorm backward, ``n = (x − μ) · rstd``:

        dx = rstd · (dn − mean(dn) − n · mean(dn ⊙ n))

    with the two means taken over the whole normalised width (every block of the row) by the
    caller: ``mean_dn``, ``mean_dn_n`` and ``rstd`` are ``[BB]``."""
    return rstd[:, None] * (dn - mean_dn[:, None] - n * mean_dn_n[:, None])


@triton.jit
def accumulate(p, o, m, v):
    """``p[o] += v`` for a block only this program touches."""
    tl.store(p + o, tl.load(p + o, mask=m, other=0.0) + v, mask=m)


@triton.jit
def next_step_starts(p_starts, d, T, B, o_b, t_next, m_b, last):
    """``(m_next, st_next)`` [BB]: the rows that have a step after this one, and whether that
    step starts from the initial state (then nothing crosses between the two)."""
    m_next = m_b & (last == 0)
    return m_next, tl.load(p_starts + (d * T + t_next) * B + o_b, mask=m_next, other=0) != 0


@triton.jit
def hand_on(p_state, p_init, o_st, m_next, st_next, b_new, m_j):
    """Forward: the state the next step begins from, in place (this program owns its rows'
    state, and the step's recurrent GEMM read it before the launch): the initial state where
    that step starts afresh, else ``b_new``."""
    m2 = m_next[:, None] & m_j
    b_init = tl.load(p_init + o_st, mask=m2 & st_next[:, None], other=0.0).to(tl.float32)
    tl.store(p_state + o_st, tl.where(st_next[:, None], b_init, b_new), mask=m2)


@triton.jit
def incoming_dh(p_dy, p_dhn, p_dhc, p_rdh, s_rdh, d, t, B, D, H, o_b, o_j, o_st, m, m_carry,
                last):
    """Backward: ``∂L/∂h_t = dy[t] + (last ? dh_n : dh_carry + rec_dh)`` [BB, HP], the carry
    (zoneout/direct part and ``dg_hid(s + 1) @ W_hh``) only where ``m_carry``."""
    b_fut = (tl.load(p_dhc + o_st, mask=m_carry, other=0.0)
             + tl.load(p_rdh + (d * s_rdh + o_b * H)[:, None] + o_j[None, :], mask=m_carry,
                       other=0.0))
    b_dh = tl.load(p_dy + ((t * B + o_b) * (D * H) + d * H)[:, None] + o_j[None, :], mask=m,
                   other=0.0).to(tl.float32)
    b_last = last[:, None]
    return b_dh + tl.where(b_last, tl.load(p_dhn + o_st, mask=m & b_last,
                                           other=0.0).to(tl.float32), b_fut)


def row_blocks(H):
    """``(BB, HP)`` of a row program for hidden size ``H``: rows per program and H padded to a
    power of two (``tl.arange``)."""
    HP = triton.next_power_of_2(H)
    return block_rows(HP), HP


def block_rows(HP):
    """Rows per program: 16 (the classic family's batch tile) while a [BB, HP] block stays
    within 2048 elements (about a dozen such blocks are live at once), fewer for wide H."""
    return max(1, min(16, 2048 // HP))
