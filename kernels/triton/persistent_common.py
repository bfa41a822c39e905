"""Pieces shared by the batch-tiled persistent (``triton-persistent``) kernels.

Dimension legend (all ``*_persistent.py`` files): T, B, D, H, G, In as in ``step_common``;
HP = H padded to a power of two ≥ 16 (tl.arange and tl.dot need it); BB batch tile.

One program owns a batch tile and *all* H hidden units of one direction, and runs the whole
sequence in one launch: ``W_hh`` is loaded into registers once, ``h`` (and ``c``) live in
registers from step to step, so nothing crosses programs and no barrier is needed. That is
only possible while ``G`` tiles of ``HP × HP`` fit in the registers of one SM, hence the
``MAX_HIDDEN`` limit of each cell. Larger H (and projections) run in the hidden-split form
(``split_common``).

Rows are independent: row b is active at step s while ``s < len_b``; an inactive row keeps
its state and writes nothing. Direction 1 reads row b's step s at time ``len_b - 1 - s``.
"""

import torch
import triton
import triton.language as tl

# The dot configurations a persistent launch can compile to (see launch_common.dot_mode):
# each has its own register budget, so each cell's MAX_HIDDEN is a table over these keys.
DOT_KEYS = ("fp32-tf32", "fp32-ieee", "fp16", "bf16")


def dot_key(dtype):
    """Which ``DOT_KEYS`` entry a model of ``dtype`` compiles to on a GPU (also used under the
    interpreter, so that limits do not depend on where the code runs)."""
    if dtype == torch.float32:
        return "fp32-tf32" if torch.backends.cudnn.allow_tf32 else "fp32-ieee"
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def padded_hidden(H):
    return max(16, triton.next_power_of_2(H))


@triton.jit
def tile_rows(p_len, B, BB: tl.constexpr, HP: tl.constexpr, H):
    """``(d, o_b, m_row, lens, o_j, m_j, n_steps)`` of program (batch tile, direction)."""
    d = tl.program_id(1).to(tl.int64)        # int64 offsets from here on
    o_b = tl.program_id(0) * BB + tl.arange(0, BB)
    m_row = o_b < B
    lens = tl.load(p_len + o_b, mask=m_row, other=0)
    o_j = tl.arange(0, HP)
    return d, o_b, m_row, lens, o_j, o_j < H, tl.max(lens, axis=0)


@triton.jit
def step_times(s, d, lens, m_row):
    """Per row at step s: ``active``, time ``t`` and the time of the previous step ``t_prev``."""
    active = m_row & (s < lens)
    t = tl.where(d == 0, s, lens - 1 - s).to(tl.int64)
    return active, t, tl.where(d == 0, t - 1, t + 1)


@triton.jit
def load_square(p, base, o_r, o_c, H, TRANSPOSE: tl.constexpr):
    """The ``[HP, HP]`` tile ``W[base + r*H + c]`` (rows r, columns c), or its transpose."""
    m = (o_r < H)[:, None] & (o_c < H)[None, :]
    if TRANSPOSE:
        return tl.load(p + base + o_c[None, :] * H + o_r[:, None], mask=m, other=0.0)
    return tl.load(p + base + o_r[:, None] * H + o_c[None, :], mask=m, other=0.0)


@triton.jit
def mm(a, w, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
    """``a [BB, HP] @ w [HP, HP]`` with fp32 accumulation (operand policy as ``rows_dot``)."""
    if DOT_FP32:
        return tl.dot(a.to(tl.float32), w.to(tl.float32), input_precision=PRECISION)
    return tl.dot(a.to(w.dtype), w)
