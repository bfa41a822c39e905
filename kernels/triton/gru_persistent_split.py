"""GRU, hidden-split persistent form: one launch for the whole sequence, any hidden size.
See ``split_common`` for the form and its barrier.

Dimension legend: see ``step_common`` / ``split_common`` (T, B, D, H, BB, BH, BK, NJ).

Program (j, d), forward, for s = 0 … max(len)-1:
    every batch tile: ``gru_step.gru_step_fwd`` for hidden slice j; barrier
Backward, s = max(len)-1 … 0:
    every batch tile: ``gru_step.gru_step_bwd`` for hidden slice j; barrier
Layouts and outputs are those of ``gru_step``, so the host side is shared.
"""

import torch
import triton
import triton.language as tl

from .gru_step import GATES, WORKSPACE_COLUMNS, gru_step_bwd, gru_step_fwd, split_biases  # noqa: F401
from .launch_common import BB, BK, dot_mode
from .split_common import active_rows, barrier_state, grid_barrier, launch, \
    programs_per_direction, slice_width, split_program, steps_with_rows


@triton.jit
def gru_persistent_split_fwd_kernel(
    p_xproj, p_whh, p_bhn, p_h0, p_y, p_ws, p_len, p_nact, p_bar, n_steps, T, B, H, D,
    HAS_BHN: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    j, d, p_bar, n_programs = split_program(p_bar)
    sense = 0
    for s in range(0, n_steps):
        n_act = tl.load(p_nact + s)
        for b_tile in range(0, tl.cdiv(n_act, BB)):
            if s == 0:   # h from h0 [D, B, H], else from y [T, B, D*H]
                gru_step_fwd(b_tile, j, d, p_xproj, p_whh, p_bhn, p_h0, B * H, 0, H,
                             p_y, p_ws, p_len, s, n_act, T, B, H, D,
                             HAS_BHN, BB, BH, BK, DOT_FP32, PRECISION, ".cg")
            else:
                gru_step_fwd(b_tile, j, d, p_xproj, p_whh, p_bhn, p_y, H, B * D * H, D * H,
                             p_y, p_ws, p_len, s, n_act, T, B, H, D,
                             HAS_BHN, BB, BH, BK, DOT_FP32, PRECISION, ".cg")
        sense = grid_barrier(p_bar, n_programs, sense)


@triton.jit
def gru_persistent_split_bwd_kernel(
    p_dy, p_dhn, p_whh, p_ws, p_h0, p_y, p_dgi, p_dgh, p_carry, p_len, p_nact, p_bar,
    n_steps, T, B, H, D,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    j, d, p_bar, n_programs = split_program(p_bar)
    sense = 0
    for s_back in range(0, n_steps):
        s = n_steps - 1 - s_back
        n_act = tl.load(p_nact + s)
        for b_tile in range(0, tl.cdiv(n_act, BB)):
            if s == 0:
                gru_step_bwd(b_tile, j, d, p_dy, p_dhn, p_whh, p_ws, p_h0, B * H, 0, H,
                             p_dgi, p_dgh, p_carry, p_len, s, n_act, T, B, H, D,
                             BB, BH, BK, DOT_FP32, PRECISION, ".cg")
            else:
                gru_step_bwd(b_tile, j, d, p_dy, p_dhn, p_whh, p_ws, p_y, H, B * D * H, D * H,
                             p_dgi, p_dgh, p_carry, p_len, s, n_act, T, B, H, D,
                             BB, BH, BK, DOT_FP32, PRECISION, ".cg")
        sense = grid_barrier(p_bar, n_programs, sense)


# ---------------------------------------------------------------------------------- launchers

def forward(xproj, w_hh, b_hn, h0, c0, lens, n_active, y, ws):
    """One launch over all steps; same arguments and outputs as ``gru_step.forward``."""
    D, T, B, _ = ws.shape
    H = w_hh.shape[2]
    n_steps = steps_with_rows(n_active)
    if not n_steps:
        return
    dot_fp32, precision = dot_mode(w_hh.dtype)
    launch(gru_persistent_split_fwd_kernel, programs_per_direction(H), D,
           (xproj, w_hh, w_hh if b_hn is None else b_hn, h0, y, ws, lens,
            active_rows(lens, T), barrier_state(D, ws.device), n_steps, T, B, H, D),
           dict(HAS_BHN=b_hn is not None, BB=BB, BH=slice_width(H), BK=BK,
                DOT_FP32=dot_fp32, PRECISION=precision))


def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc):
    """One launch over all steps; same arguments and outputs as ``gru_step.backward``."""
    D, T, B, _ = ws.shape
    H = w_hh.shape[2]
    dgi, dgh = alloc((D, T, B, 3 * H)), alloc((D, T, B, 3 * H))
    carry = torch.zeros((D, B, H), dtype=torch.float32, device=ws.device)  # see gru_step
    n_steps = steps_with_rows(n_active)
    if n_steps:
        dot_fp32, precision = dot_mode(w_hh.dtype, backward=True)
        launch(gru_persistent_split_bwd_kernel, programs_per_direction(H), D,
               (dy, dh_n, w_hh, ws, h0, y, dgi, dgh, carry, lens, active_rows(lens, T),
                barrier_state(D, ws.device), n_steps, T, B, H, D),
               dict(BB=BB, BH=slice_width(H), BK=BK, DOT_FP32=dot_fp32, PRECISION=precision))
    return {"dg_in": dgi, "dg_hid": dgh, "dh_carry": carry, "dc": None}
