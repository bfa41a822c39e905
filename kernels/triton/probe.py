"""The GPU check's Triton probes (``python -m fusedrnn gpucheck``, phase floors): the cost of
one launch and of one grid barrier, the two floors under a step kernel's and a hidden-split
persistent kernel's per-step time, and the bandwidth of reads served from L2, at which the
split kernels re-read their W_hh slice every step. No backend uses them.

Dimension legend: n_programs = the grid (one program per SM or two), rounds = barriers or
passes per launch, N = elements of the L2-resident buffer, BLOCK = elements a program reads
per load.
"""

import torch
import triton
import triton.language as tl

from ..timing import median_seconds
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


@triton.jit
def probe_read_kernel(p_buf, p_out, N, rounds, BLOCK: tl.constexpr):
    """Every program reads its share of ``p_buf [N]`` fp32, ``rounds`` times over, and stores
    one sum (so the loads cannot be dropped). After the first pass the buffer is in L2."""
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for _ in range(0, rounds):
        for start in range(pid * BLOCK, N, n_programs * BLOCK):
            o = start + tl.arange(0, BLOCK)
            acc += tl.load(p_buf + o, mask=o < N, other=0.0, cache_modifier=".cg")
    tl.store(p_out + pid, tl.sum(acc, axis=0))


def empty_launch_us(device, launches=2000, repeats=5):
    """Microseconds per launch of an empty Triton kernel, ``launches`` back to back (Triton's
    host-side launch path: argument specialisation, cache look-up, driver call)."""
    anchor = torch.empty(1, device=device)

    def burst():
        for _ in range(launches):
            probe_empty_kernel[(1,)](anchor)
    return median_seconds(burst, device, repeats) / launches * 1e6


def l2_read_gbps(device, nbytes, rounds=50, repeats=5, BLOCK=4096):
    """GB/s of fp32 reads from a buffer of ``nbytes`` (a fraction of the L2), ``rounds``
    passes per launch over 4 programs per SM (``.cg``: L2, not L1, as the split kernels'
    cross-program loads)."""
    n = nbytes // 4
    buf = torch.randn(n, device=device)
    programs = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    out = torch.empty(programs, device=device)

    def run():
        probe_read_kernel[(programs,)](buf, out, n, rounds, BLOCK=BLOCK, num_warps=8)
    return n * 4 * rounds / median_seconds(run, device, repeats) / 1e9


def barrier_us(device, n_programs, rounds=10_000, repeats=3, num_warps=split_common.NUM_WARPS):
    """Microseconds per grid barrier with ``n_programs`` co-resident programs, launched
    cooperatively as the hidden-split kernels are (their warp count). Raises ValueError when the
    grid cannot be resident (the split launch's own check)."""
    bar = split_common.barrier_state(1, torch.device(device))
    out = torch.zeros(1, dtype=torch.int32, device=device)
    args = (bar, out, rounds)
    options = dict(num_warps=num_warps, launch_cooperative_grid=True)
    compiled = probe_barrier_kernel.warmup(*args, grid=(n_programs,), **options)
    capacity = split_common.co_resident_capacity(compiled, torch.device(device))
    if n_programs > capacity:
        raise ValueError(f"{n_programs} programs exceed the {capacity} this GPU holds at once")

    def run():
        bar.zero_()           # each launch starts from a fresh barrier, as a split launch does
        probe_barrier_kernel[(n_programs,)](*args, **options)
    seconds = median_seconds(run, device, repeats)
    if int(out.item()) != rounds:
        raise RuntimeError(f"probe_barrier_kernel passed {int(out.item())} barriers, not {rounds}")
    return seconds / rounds * 1e6
