"""Launchers of the GPU check's CUDA probes (``probe.cu``, ``probe_grid_sync.cu``).

Used by ``python -m fusedrnn gpucheck`` (phases env and floors); no backend uses them. Each
function needs a CUDA device and CuPy, and compiles through :mod:`.loader`, so the probes meet
exactly the compile options, include paths and launch path of the backends' kernels.
"""

import numpy
import torch

from ..timing import median_seconds
from . import loader

COOPERATIVE_SOURCES = frozenset({"probe_grid_sync.cu"})
BARRIER_THREADS = 128


def bf16_mma_error(device):
    """Compile ``probe_bf16_mma`` (cuda_bf16.h, mma.h), run it once on random 16x16 tiles and
    return its relative error against torch's fp32 matmul of the same bf16 values."""
    fn = loader.get_function("probe.cu", "probe_bf16_mma", torch.bfloat16, device=device)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 16, generator=g).to(device, torch.bfloat16)
    b = torch.randn(16, 16, generator=g).to(device, torch.bfloat16)
    c = torch.full((16, 16), float("nan"), device=device)
    # b is read col-major: element (k, n) at b[n*16 + k], i.e. the rows of bᵀ.
    loader.launch(fn, (1,), (32,), [a, b.t().contiguous(), c])
    want = a.float() @ b.float()
    return ((c - want).norm() / want.norm()).item()


def empty_launch_us(device, launches=2000, repeats=5):
    """Microseconds per launch of an empty kernel, ``launches`` back to back through
    :func:`loader.launch` (argument checks and stream hand-off included: what a per-step
    launcher pays per kernel)."""
    fn = loader.get_function("probe.cu", "probe_empty", torch.float32, device=device)
    anchor = torch.empty(1, dtype=torch.int32, device=device)

    def burst():
        for _ in range(launches):
            loader.launch(fn, (1,), (32,), [anchor])
    return median_seconds(burst, device, repeats) / launches * 1e6


def grid_sync_us(device, blocks, rounds=10_000, repeats=3):
    """Microseconds per ``grid.sync()`` with ``blocks`` co-resident blocks of
    ``BARRIER_THREADS`` threads, or a ValueError when the grid cannot be resident."""
    fn = loader.get_function("probe_grid_sync.cu", "probe_grid_sync", torch.float32,
                             cooperative=True, device=device)
    capacity = loader.max_cooperative_blocks(fn, (BARRIER_THREADS,), 0, device)
    if blocks > capacity:
        raise ValueError(f"{blocks} blocks of {BARRIER_THREADS} threads exceed the {capacity} "
                         f"that can be co-resident")
    out = torch.zeros(1, dtype=torch.int32, device=device)

    def run():
        loader.launch(fn, (blocks,), (BARRIER_THREADS,), [numpy.int32(rounds), out])
    seconds = median_seconds(run, device, repeats)
    if int(out.item()) != rounds:
        raise RuntimeError(f"probe_grid_sync saw {int(out.item())} rounds, not {rounds}")
    return seconds / rounds * 1e6
