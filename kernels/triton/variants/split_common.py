"""Pieces shared by the hidden-split persistent variant kernels (``<cell>_persistent_split`` in
this folder): the form for layers too wide for the batch-tiled variant kernels' registers.

Dimension legend (every kernel file of this form):
    T, B, D, H, HP, G, N = G*H, BB (rows per row program): as in ``step_common`` of this folder
    NJ  programs per direction, grid ``(NJ, D)``; program j owns hidden slice j (BH units)
    BBG rows per tile of the recurrent product (``launch_common.BB``, tl.dot's minimum 16)
    BH  slice width (``kernels/triton/split_common.slice_width``), BK reduction chunk

**Why two phases per step.** LayerNorm normalises each row over all G*H gate pre-activations
of the recurrent product (and the LSTM's c' over H). In the classic split form a program owns
a hidden slice of every row, so a row's statistics would be spread over NJ programs: partial
sums, a grid barrier, the combination, and for the cell-state LN a second round. Instead each
step is split where the work changes shape:

    phase 1, by hidden slice:  rec[d, b, g*H + slice j] = h_in[d, b, :] · W_hh[d, g*H + slice j, :]
                               for every row b and gate g (``recurrent_product``)
    grid barrier               (a row's G*H products come from all NJ programs)
    phase 2, by rows:          program j runs row tiles j, j + NJ, … through the step family's
                               row body (``<cell>_step.<cell>_variant_fwd_rows``), which owns whole
                               rows: LN statistics are in-register row reductions, as there
    grid barrier               (step s+1's products read every row's new state)

Backward mirrors it: the row body (``..._bwd_rows``, LN backward included) by rows, a barrier,
``dh_rec[d, b, slice j] = dg_hid[d, b, :] · W_hh[d, :, slice j]`` by hidden slice
(``recurrent_product_back``), a barrier. So everything after the recurrent product is
``triton-step``'s own code, there are two barriers per step instead of the classic split
form's one, and no extra pass for the LN statistics. The recurrent products are Triton dots
with the classic kernels' dot mode (``launch_common.dot_mode``), not ``triton-step``'s fp32
``torch.bmm``: fp16/bf16 round the carried state (backward: dg_hid) to the model's dtype for
the tensor cores, as the classic kernels and cuDNN do, and fp32 uses TF32 under
``cudnn.allow_tf32`` (``bmm`` follows ``matmul.allow_tf32`` instead). The row phase runs
``cdiv(n_active, BB)`` tiles over NJ programs: at H = 768 (BB = 2) and B = 16, 8 of 24 work.

The state and gradient buffers the phases hand each other (``rec [D, B, N]``, the carried
``h``/``c`` ``[D, B, H]``, ``dg_step [D, B, N]``, ``dh_rec [D, B, H]``, all fp32) are written
by some programs and read by others after a barrier; ``kernels/triton/split_common`` says why
that is visible (the barrier's acquire invalidates L1) and how the launch is made
co-resident.
"""

import triton
import triton.language as tl

from .. import split_common
from ..launch_common import BB as BBG, BK, dot_mode, interpreting
from ..step_common import rows_dot
from .step_common import row_blocks


@triton.jit
def recurrent_product(p_state, p_whh, p_rec, d, j, n_active, B, H, G: tl.constexpr,
                      BBG: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
                      DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
    """Forward phase 1: ``rec[d, b, g*H + slice j] = state[d, b, :H] @ W_hh[d, g*H + slice j, :]ᵀ``
    for rows ``b < n_active`` and every gate (``p_state`` [D, B, H] fp32, ``p_whh`` [D, G*H, H],
    ``p_rec`` [D, B, G*H] fp32)."""
    N = G * H
    o_n = j * BH + tl.arange(0, BH)
    m_n = o_n < H
    for b_tile in range(0, tl.cdiv(n_active, BBG)):
        o_b = b_tile * BBG + tl.arange(0, BBG)
        m_b = o_b < n_active
        for g in tl.static_range(G):
            acc = tl.zeros([BBG, BH], dtype=tl.float32)
            # W_hh[d, g*H + n, k] at k stride 1: the tile [BK, BH] is W_hh's slice transposed.
            acc = rows_dot(acc, p_state, (d * B + o_b) * H, m_b, H, p_whh + d * N * H,
                           (g * H + o_n) * H, m_n, 1, BK, DOT_FP32, PRECISION, ".cg")
            tl.store(p_rec + ((d * B + o_b) * N + g * H)[:, None] + o_n[None, :], acc,
                     mask=m_b[:, None] & m_n[None, :])


@triton.jit
def recurrent_product_back(p_dgs, p_whh, p_rdh, d, j, n_active, B, H, G: tl.constexpr,
                           BBG: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
                           DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
    """Backward phase 2: ``dh_rec[d, b, slice j] = dg_step[d, b, :G*H] @ W_hh[d, :, slice j]`` for
    rows ``b < n_active`` (``p_dgs`` [D, B, G*H] fp32, ``p_rdh`` [D, B, H] fp32)."""
    N = G * H
    o_n = j * BH + tl.arange(0, BH)
    m_n = o_n < H
    for b_tile in range(0, tl.cdiv(n_active, BBG)):
        o_b = b_tile * BBG + tl.arange(0, BBG)
        m_b = o_b < n_active
        acc = tl.zeros([BBG, BH], dtype=tl.float32)
        acc = rows_dot(acc, p_dgs, (d * B + o_b) * N, m_b, N, p_whh + d * N * H, o_n, m_n, H,
                       BK, DOT_FP32, PRECISION, ".cg")
        tl.store(p_rdh + (d * B + o_b)[:, None] * H + o_n[None, :], acc,
                 mask=m_b[:, None] & m_n[None, :])


# Under the Triton interpreter programs run one after another, so a grid barrier works with one
# program per direction only (``kernels/triton/split_common``) and the multi-program index math
# (slices j > 0, a partial last slice, row tiles strided over NJ programs) would never run on
# a CPU. With a width set here (tests set 16), the interpreter instead runs NJ = cdiv(H, width)
# programs per direction and one launch per phase of each step: a launch boundary orders the
# phases as the barrier does on a GPU. None: the GPU's form, one launch, one program per
# direction under the interpreter.
INTERPRETER_SLICE_WIDTH = None

PRODUCT, ROWS, BOTH = 1, 2, 3      # PHASES: which phases a launch runs (BOTH: with barriers)


def launch(kernel, w_hh, lens, n_active, args, switches, backward):
    """Launch a split variant kernel over every step that has rows: grid ``(NJ, D)`` from
    ``w_hh [D, G*H, H]``, the step family's row tiles, the classic kernels' dot mode for
    ``w_hh``'s dtype, and the co-resident, cooperative launch of ``kernels/triton/split_common``
    (both phases, with barriers, in one launch); under the interpreter with
    ``INTERPRETER_SLICE_WIDTH``, one launch per phase and step instead.

    ``args`` are the kernel's arguments but those every split variant kernel has, which the
    launch adds: ``p_nact`` (rows per step, from ``lens`` on the device), ``p_bar`` and
    ``n_steps`` where the kernel has them, then ``s_begin``, ``s_end`` (its last two)."""
    n_steps = split_common.steps_with_rows(n_active)
    if not n_steps:
        return
    D, _, H = w_hh.shape
    at = kernel.arg_names.index("p_nact")
    args = (*args[:at], split_common.active_rows(lens, len(n_active)),
            split_common.barrier_state(D, w_hh.device), n_steps, *args[at:])
    BB, HP = row_blocks(H)
    dot_fp32, precision = dot_mode(w_hh.dtype, backward=backward)
    constexprs = dict(switches, BB=BB, HP=HP, BBG=BBG, BK=BK, DOT_FP32=dot_fp32,
                      PRECISION=precision)
    if interpreting() and INTERPRETER_SLICE_WIDTH:
        width = INTERPRETER_SLICE_WIDTH
        grid = (triton.cdiv(H, width), D)
        for s in range(n_steps):
            for phase in ((ROWS, PRODUCT) if backward else (PRODUCT, ROWS)):
                kernel[grid](*args, s, s + 1, **constexprs, BH=width, PHASES=phase)
        return
    split_common.launch(kernel, split_common.programs_per_direction(H), D, (*args, 0, n_steps),
                        dict(constexprs, BH=split_common.slice_width(H), PHASES=BOTH))
