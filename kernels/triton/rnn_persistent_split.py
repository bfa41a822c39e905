"""Elman RNN (tanh or relu), hidden-split persistent form: one launch for the whole sequence,
any hidden size. See ``split_common`` for the form and its barrier.

Dimension legend: see ``step_common`` / ``split_common`` (T, B, D, H, BB, BH, BK, NJ).

Program (j, d), forward, for s = 0 … max(len)-1:
    every batch tile: ``rnn_step.rnn_step_fwd`` for hidden slice j; barrier
Backward, s = max(len)-1 … 0:
    every batch tile: ``rnn_step.rnn_step_bwd`` for hidden slice j; barrier
"""

from types import SimpleNamespace

import triton
import triton.language as tl

from .launch_common import BB, BK, dot_mode
from .rnn_step import GATES, WORKSPACE_COLUMNS, rnn_step_bwd, rnn_step_fwd, split_biases
from .split_common import active_rows, barrier_state, grid_barrier, launch, \
    programs_per_direction, slice_width, split_program, steps_with_rows


@triton.jit
def rnn_persistent_split_fwd_kernel(
    p_xproj, p_whh, p_h0, p_y, p_len, p_nact, p_bar, n_steps, B, H, D,
    RELU: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    j, d, p_bar, n_programs = split_program(p_bar)
    sense = 0
    for s in range(0, n_steps):
        n_act = tl.load(p_nact + s)
        for b_tile in range(0, tl.cdiv(n_act, BB)):
            if s == 0:   # h from h0 [D, B, H], else from y [T, B, D*H]
                rnn_step_fwd(b_tile, j, d, p_xproj, p_whh, p_h0, B * H, 0, H, p_y, p_len, s, n_act,
                             B, H, D, RELU, BB, BH, BK, DOT_FP32, PRECISION, ".cg")
            else:
                rnn_step_fwd(b_tile, j, d, p_xproj, p_whh, p_y, H, B * D * H, D * H, p_y, p_len, s,
                             n_act, B, H, D, RELU, BB, BH, BK, DOT_FP32, PRECISION, ".cg")
        sense = grid_barrier(p_bar, n_programs, sense)


@triton.jit
def rnn_persistent_split_bwd_kernel(
    p_dy, p_dhn, p_whh, p_y, p_dg, p_len, p_nact, p_bar, n_steps, T, B, H, D,
    RELU: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    j, d, p_bar, n_programs = split_program(p_bar)
    sense = 0
    for s_back in range(0, n_steps):
        s = n_steps - 1 - s_back
        n_act = tl.load(p_nact + s)
        for b_tile in range(0, tl.cdiv(n_act, BB)):
            rnn_step_bwd(b_tile, j, d, p_dy, p_dhn, p_whh, p_y, p_dg, p_len, s, n_act, T, B, H, D,
                         RELU, BB, BH, BK, DOT_FP32, PRECISION, ".cg")
        sense = grid_barrier(p_bar, n_programs, sense)


# ---------------------------------------------------------------------------------- launchers

def _make(relu):
    def forward(xproj, w_hh, b_hh, h0, c0, lens, n_active, y, ws):
        """One launch over all steps; same arguments and outputs as ``rnn_step``'s."""
        D, B, H = h0.shape
        T = len(n_active)
        n_steps = steps_with_rows(n_active)
        if not n_steps:
            return
        dot_fp32, precision = dot_mode(w_hh.dtype)
        launch(rnn_persistent_split_fwd_kernel, programs_per_direction(H), D,
               (xproj, w_hh, h0, y, lens, active_rows(lens, T),
                barrier_state(D, y.device), n_steps, B, H, D),
               dict(RELU=relu, BB=BB, BH=slice_width(H), BK=BK, DOT_FP32=dot_fp32,
                    PRECISION=precision))

    def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc):
        """One launch over all steps; same arguments and outputs as ``rnn_step``'s."""
        D, B, H = h0.shape
        T = len(n_active)
        dg = alloc((D, T, B, H))
        n_steps = steps_with_rows(n_active)
        if n_steps:
            dot_fp32, precision = dot_mode(w_hh.dtype, backward=True)
            launch(rnn_persistent_split_bwd_kernel, programs_per_direction(H), D,
                   (dy, dh_n, w_hh, y, dg, lens, active_rows(lens, T),
                    barrier_state(D, y.device), n_steps, T, B, H, D),
                   dict(RELU=relu, BB=BB, BH=slice_width(H), BK=BK, DOT_FP32=dot_fp32,
                        PRECISION=precision))
        return {"dg_in": dg, "dg_hid": dg, "dh_carry": None, "dc": None}

    return SimpleNamespace(GATES=GATES, WORKSPACE_COLUMNS=WORKSPACE_COLUMNS,
                           split_biases=split_biases, forward=forward, backward=backward)


TANH = _make(relu=False)
RELU = _make(relu=True)
