"""Pieces shared by the hidden-split persistent kernels (``<cell>_persistent_split.py``).

Dimension legend: as in ``step_common`` (T, B, D, H, Hr, G, BB, BH, BK); NJ = programs per
direction (hidden slices), grid ``(NJ, D)``.

The hidden-split form is the persistent form for hidden sizes whose ``W_hh`` does not fit in
one program's registers (the batch-tiled form's ``MAX_HIDDEN``). Program (j, d) owns hidden
slice ``j*BH … j*BH+BH-1`` of every gate of direction d for *all* rows and runs the whole
sequence in one launch. Each step it runs the per-timestep kernels' tile bodies
(``<cell>_step.<cell>_step_fwd`` …) for its slice over every batch tile, so the arithmetic is
exactly that of ``triton-step``, and then waits at a grid barrier, because step s+1 reads the
h (backward: dG) that *every* slice wrote at step s. Its W_hh slice is the same every step
and is re-read from L2 (not L1: every barrier's acquire invalidates L1), so W_hh comes from HBM
once per sequence while ``G·H·H`` fits in L2 (50 MB on an H200), not once per step.

Memory ordering, as compiled for sm_90 (PTX/SASS read with Triton 3.6 and 3.9): the barrier's
scalar atomics run on thread 0, their results reach the other threads through shared memory
and ``bar.sync``. Arrival is ``bar.sync`` (after ``cp.async.wait_group 0``: every load and store
of the step has completed) → ``MEMBAR.GPU`` → atomic add; waiting is an ``ld.acquire.gpu`` spin
whose acquire invalidates the SM's L1 (``CCTL.IVALL``) → ``bar.sync``. So every write of step s
is visible, and no stale L1 line is read, at step s+1 — the same shape as CUDA's
``grid.sync()``. The tile bodies' ``CACHE=".cg"`` loads are only a hint on top: Triton's
pipeliner turns most cross-program loads into ``cp.async.ca`` anyway, and correctness does not
depend on them.

The barrier needs every program of a direction resident at once: the launch is cooperative
(``launch_cooperative_grid=True``: the driver refuses a grid too large to be resident instead
of letting it hang) and ``launch`` first compares the grid with ``co_resident_capacity`` and
refuses it with a ValueError naming the limit.
Under the Triton interpreter programs run one after another, so a barrier only works with one
program per direction: there BH covers all of H (and P), see ``slice_width``.
"""

import torch
import triton
import triton.language as tl

from .launch_common import interpreting

# Hidden units per program on a GPU: the step kernels' hidden tile (launch_common.BH), so a
# slice runs the very tile body those kernels were validated with. Untuned (no GPU yet).
SLICE_WIDTH = 32
# 8 warps: at 4, ptxas (sm_90) spills 16-80 bytes in the fp32 LSTM and GRU split kernels (each
# inlines its step tile body twice: from h0 at s = 0 and from y after); at 8 none spills
# (≤ 231 registers), checked by tests/test_ptx_compile.py.
NUM_WARPS = 8


def slice_width(*widths):
    """BH of the split kernels: ``SLICE_WIDTH`` on a GPU; under the interpreter one slice
    covering the widest of ``widths`` (H, and P with a projection), see the module docstring."""
    if interpreting():
        return max(16, triton.next_power_of_2(max(widths)))
    return SLICE_WIDTH


def programs_per_direction(*widths):
    return triton.cdiv(max(widths), slice_width(*widths))


@triton.jit
def split_program(p_bar):
    """``(j, d, p_bar_d, n_programs)`` of program (hidden slice j, direction d): its barrier
    state and how many programs meet there (those of its direction)."""
    d = tl.program_id(1)
    return tl.program_id(0), d, p_bar + d * 2, tl.num_programs(0)


@triton.jit
def grid_barrier(p_bar, n_programs, sense):
    """Sense-reversing barrier over the ``n_programs`` programs that share ``p_bar``
    (``[arrived, flag]`` int32, zero before the launch). Returns the caller's new sense.

    The last program to arrive resets the counter, then flips the flag; the others spin on the
    flag. Resetting before the release lets the counter be reused by the very next barrier.
    """
    sense = 1 - sense
    tl.debug_barrier()                  # all of this program's threads have issued their stores
    arrived = tl.atomic_add(p_bar, 1, sem="acq_rel", scope="gpu")
    if arrived == n_programs - 1:
        tl.atomic_xchg(p_bar, 0, sem="relaxed", scope="gpu")
        tl.atomic_xchg(p_bar + 1, sense, sem="release", scope="gpu")
    else:
        while tl.atomic_add(p_bar + 1, 0, sem="acquire", scope="gpu") != sense:
            pass
    tl.debug_barrier()                  # no thread reads before the flag was seen
    return sense


def barrier_state(D, device):
    """One ``[arrived, flag]`` pair per direction: directions never wait for each other."""
    return torch.zeros((D, 2), dtype=torch.int32, device=device)


def steps_with_rows(n_active):
    """How many steps run at all: ``n_active`` (rows per step) only shrinks, so its nonzero
    prefix."""
    return sum(1 for n in n_active if n)


def active_rows(lens, T):
    """Rows running at each step, ``[T]`` int32 on ``lens``' device, read by the kernel at each
    step; computed there from the device lengths (``[B]``), so no blocking host-to-device copy."""
    steps = torch.arange(T, device=lens.device)
    return (lens[None, :] > steps[:, None]).sum(1, dtype=torch.int32)


_CAPACITY = {}   # (compiled kernel hash, device index) -> co_resident_capacity


def co_resident_capacity(compiled, device):
    """How many programs of ``compiled`` the device holds at once (registers, threads and
    shared memory per SM; the driver's cooperative-launch limit). Computed once per compiled
    kernel and device: it is asked before every launch."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (compiled.hash, index)
    if key not in _CAPACITY:
        _CAPACITY[key] = _capacity(compiled, index)
    return _CAPACITY[key]


def _capacity(compiled, index):
    props = triton.runtime.driver.active.utils.get_device_properties(index)
    compiled._init_handles()     # loads the binary: n_regs is known from then on (Triton 3.6-3.9)
    warps = compiled.metadata.num_warps
    regs_per_warp = -(-compiled.n_regs * 32 // 256) * 256      # allocated per warp in 256s
    by_regs = props["max_num_regs"] // max(1, regs_per_warp * warps)
    by_threads = 2048 // (32 * warps)                          # sm_80+: 2048 threads per SM
    shared = compiled.metadata.shared
    by_shared = props["max_shared_mem"] // shared if shared else 32
    return props["multiprocessor_count"] * max(0, min(by_regs, by_threads, by_shared, 32))


def launch(kernel, n_programs, D, args, constexprs):
    """Launch ``kernel`` on grid ``(n_programs, D)``, cooperatively on a GPU, after checking
    that the whole grid can be resident (a barrier over programs that cannot all run hangs)."""
    grid = (n_programs, D)
    if interpreting():
        assert n_programs == 1, "the interpreter runs programs in turn: one per barrier"
        kernel[grid](*args, **constexprs)
        return
    options = dict(num_warps=NUM_WARPS, launch_cooperative_grid=True, **constexprs)
    compiled = kernel.warmup(*args, grid=grid, **options)     # compiles (cached), no launch
    capacity = co_resident_capacity(compiled, args[0].device)
    if n_programs * D > capacity:
        raise ValueError(f"the hidden-split persistent kernel needs {n_programs * D} co-resident "
                         f"programs but this GPU holds {capacity}")
    kernel[grid](*args, **options)
