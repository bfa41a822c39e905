"""The GPU check's Triton probes (``python -m fusedrnn gpucheck``, phase floors): the cost of
one launch and of one grid barrier, the two floors under a step kernel's and a hidden-split
persistent kernel's per-step time. No backend uses them.

Dimension legend: n_programs = the grid (one program per SM or two), rounds = barriers per
launch.
"""

import numpy
import torch
import triton
import triton.language as tl

from . import split_common


@triton.jit
def probe_empty_kernel(p_unused):
    pass


@triton.jit
def probe_barrier_kernel(p_bar, p_out, rounds):
    """``rounds`` grid barriers back to back (the hidden-split kernels' barrier, unchanged);
    program 0 stores how many it passed, so the loop cannot be dropped."""
    n = tl.num_programs(0)
    sense = 0
    seen = 0
    for _ in range(0, rounds):
        sense = split_common.grid_barrier(p_bar, n, sense)
        seen += 1
    if tl.program_id(0) == 0:
        tl.store(p_out, seen)


def _event_seconds(fn, repeats):
    fn()                                   # warm-up: compilation and module load stay out
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return float(numpy.median(times))


def empty_launch_us(device, launches=2000, repeats=5):
    """Microseconds per launch of an empty Triton kernel, ``launches`` back to back (Triton's
    host-side launch path: argument specialisation, cache look-up, driver call)."""
    anchor = torch.empty(1, device=device)

    def burst():
        for _ in range(launches):
            probe_empty_kernel[(1,)](anchor)
    return _event_seconds(burst, repeats) / launches * 1e6


def barrier_us(device, n_programs, rounds=10_000, repeats=3, num_warps=4):
    """Microseconds per grid barrier with ``n_programs`` co-resident programs, launched
    cooperatively as the hidden-split kernels are. Raises ValueError when the grid cannot be
    resident (the split launch's own check)."""
    bar = split_common.barrier_state(1, torch.device(device))
    out = torch.zeros(1, dtype=torch.int32, device=device)
    args = (bar, out, rounds)
    options = dict(num_warps=num_warps, launch_cooperative_grid=True)
    compiled = probe_barrier_kernel.warmup(*args, grid=(n_programs,), **options)
    capacity = split_common.co_resident_capacity(compiled, torch.device(device))
    if n_programs > capacity:
        raise ValueError(f"{n_programs} programs exceed the {capacity} this GPU holds at once")

    def run():
        probe_barrier_kernel[(n_programs,)](*args, **options)
    seconds = _event_seconds(run, repeats)
    if int(out.item()) != rounds:
        raise RuntimeError(f"probe_barrier_kernel passed {int(out.item())} barriers, not {rounds}")
    return seconds / rounds * 1e6
