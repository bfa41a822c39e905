"""LSTM, hidden-split persistent form: one launch for the whole sequence, any hidden size,
with or without a projection. See ``split_common`` for the form and its barrier.

Dimension legend: see ``step_common`` / ``split_common`` (T, B, D, H, Hr, P, BB, BH, BK, NJ).

Program (j, d), forward, for s = 0 … max(len)-1:
    every batch tile: ``lstm_step.lstm_step_fwd`` for hidden slice j        (ws, and y if P = 0)
    with a projection: barrier; every batch tile: ``lstm_proj_fwd`` for P-slice j    (y)
    barrier                                                    (step s+1 reads all of h)
Backward, s = max(len)-1 … 0:
    with a projection: ``lstm_proj_bwd_dh`` for P-slice j; barrier       (dh [.., P])
    every batch tile: ``lstm_step_bwd`` for hidden slice j                   (dG, dc carry)
    barrier                                                    (step s-1 reads all of dG)
Layouts and outputs are those of ``lstm_step``, so the host side is shared.
"""

import torch
import triton.language as tl
import triton

from .launch_common import BB, BK, dot_mode
from .lstm_step import GATES, WORKSPACE_COLUMNS, lstm_proj_bwd_dh, lstm_proj_fwd, lstm_step_bwd, \
    lstm_step_fwd, split_biases  # noqa: F401  (same layouts)
from .split_common import active_rows, barrier_state, grid_barrier, launch, \
    programs_per_direction, slice_width, split_program, steps_with_rows


@triton.jit
def lstm_persistent_split_fwd_kernel(
    p_xproj, p_whh, p_h0, p_c0, p_y, p_ws, p_whr, p_len, p_nact, p_bar, ws_stride_d,
    n_steps, T, B, H, Hr, D, HAS_PROJ: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    j, d, p_bar, n_programs = split_program(p_bar)
    sense = 0
    for s in range(0, n_steps):
        n_act = tl.load(p_nact + s)
        for b_tile in range(0, tl.cdiv(n_act, BB)):
            if s == 0:   # state from h0 / c0 [D, B, ·]
                lstm_step_fwd(b_tile, j, d, p_xproj, p_whh, p_h0, B * Hr, 0, Hr, p_c0, B * H, 0, H,
                              p_y, p_ws, p_len, s, n_act, T, B, H, Hr, D,
                              HAS_PROJ, BB, BH, BK, DOT_FP32, PRECISION, ".cg")
            else:        # state from y [T, B, D*Hr] and the workspace's c column [D, T, B, 5H]
                # (its direction stride T*B*5H comes from the host: it can pass 2³¹, i32 math
                # on the kernel's T, B, H would wrap)
                lstm_step_fwd(b_tile, j, d, p_xproj, p_whh, p_y, Hr, B * D * Hr, D * Hr,
                              p_ws + 4 * H, ws_stride_d, B * 5 * H, 5 * H,
                              p_y, p_ws, p_len, s, n_act, T, B, H, Hr, D,
                              HAS_PROJ, BB, BH, BK, DOT_FP32, PRECISION, ".cg")
        if HAS_PROJ:
            sense = grid_barrier(p_bar, n_programs, sense)
            for b_tile in range(0, tl.cdiv(n_act, BB)):
                lstm_proj_fwd(b_tile, j, d, p_ws, p_whr, p_y, p_len, s, n_act, T, B, H, Hr, D,
                              BB, BH, BK, DOT_FP32, PRECISION, ".cg")
        sense = grid_barrier(p_bar, n_programs, sense)


@triton.jit
def lstm_persistent_split_bwd_kernel(
    p_dy, p_dhn, p_dcn, p_whh, p_ws, p_c0, p_dg, p_dc, p_dh, p_whr, p_len, p_nact, p_bar,
    ws_stride_d, n_steps, T, B, H, Hr, D,
    HAS_PROJ: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
):
    j, d, p_bar, n_programs = split_program(p_bar)
    sense = 0
    for s_back in range(0, n_steps):
        s = n_steps - 1 - s_back
        n_act = tl.load(p_nact + s)
        if HAS_PROJ:
            for b_tile in range(0, tl.cdiv(n_act, BB)):
                lstm_proj_bwd_dh(b_tile, j, d, p_dy, p_dhn, p_whh, p_dg, p_dh, p_len, s, n_act,
                                 T, B, H, Hr, D, BB, BH, BK, DOT_FP32, PRECISION, ".cg")
            sense = grid_barrier(p_bar, n_programs, sense)
        for b_tile in range(0, tl.cdiv(n_act, BB)):
            if s == 0:
                lstm_step_bwd(b_tile, j, d, p_dy, p_dhn, p_dcn, p_whh, p_ws, p_c0, B * H, 0, H,
                              p_dg, p_dc, p_dh, p_whr, p_len, s, n_act, T, B, H, Hr, D,
                              HAS_PROJ, BB, BH, BK, DOT_FP32, PRECISION, ".cg")
            else:
                lstm_step_bwd(b_tile, j, d, p_dy, p_dhn, p_dcn, p_whh, p_ws,
                              p_ws + 4 * H, ws_stride_d, B * 5 * H, 5 * H,
                              p_dg, p_dc, p_dh, p_whr, p_len, s, n_act, T, B, H, Hr, D,
                              HAS_PROJ, BB, BH, BK, DOT_FP32, PRECISION, ".cg")
        sense = grid_barrier(p_bar, n_programs, sense)


# ---------------------------------------------------------------------------------- launchers

def forward(xproj, w_hh, b_hh, h0, c0, lens, n_active, y, ws, w_hr=None):
    """One launch over all steps; same arguments and outputs as ``lstm_step.forward``."""
    D, T, B, _ = ws.shape
    H, Hr = w_hh.shape[1] // GATES, w_hh.shape[2]
    n_steps = steps_with_rows(n_active)
    if not n_steps:
        return
    dot_fp32, precision = dot_mode(w_hh.dtype)
    launch(lstm_persistent_split_fwd_kernel, programs_per_direction(H, Hr), D,
           (xproj, w_hh, h0, c0, y, ws, w_hh if w_hr is None else w_hr, lens,
            active_rows(lens, T), barrier_state(D, ws.device), ws.stride(0), n_steps,
            T, B, H, Hr, D),
           dict(HAS_PROJ=w_hr is not None, BB=BB, BH=slice_width(H, Hr), BK=BK,
                DOT_FP32=dot_fp32, PRECISION=precision))


def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc, w_hr=None):
    """One launch over all steps; same arguments and outputs as ``lstm_step.backward``."""
    D, T, B, _ = ws.shape
    H, Hr = w_hh.shape[1] // GATES, w_hh.shape[2]
    dg = alloc((D, T, B, 4 * H))
    dc = torch.zeros((D, B, H), dtype=torch.float32, device=ws.device)
    dh_proj = alloc((D, T, B, Hr)) if w_hr is not None else None
    n_steps = steps_with_rows(n_active)
    if n_steps:
        dot_fp32, precision = dot_mode(w_hh.dtype, backward=True)
        launch(lstm_persistent_split_bwd_kernel, programs_per_direction(H, Hr), D,
               (dy, dh_n, dc_n, w_hh, ws, c0, dg, dc, dg if dh_proj is None else dh_proj,
                w_hh if w_hr is None else w_hr, lens, active_rows(lens, T),
                barrier_state(D, ws.device), ws.stride(0), n_steps, T, B, H, Hr, D),
               dict(HAS_PROJ=w_hr is not None, BB=BB, BH=slice_width(H, Hr), BK=BK,
                    DOT_FP32=dot_fp32, PRECISION=precision))
    return {"dg_in": dg, "dg_hid": dg, "dh_carry": None, "dc": dc, "dh_proj": dh_proj}
