"""How long one call takes on a device: CUDA events on a GPU (the work is asynchronous, so a
host clock would time the launch, not the kernel), the host clock on the CPU. Shared by the GPU
check's probes, floors and timing phase and the cells' decode-loop benchmark."""

import time

import numpy
import torch


def seconds_of(fn, device):
    """Seconds one ``fn()`` takes on ``device``, synchronised."""
    if torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_seconds(fn, device, repeats, warmup=1):
    """Median of ``repeats`` timed calls after ``warmup`` untimed ones (compilation, module
    load and allocator growth stay out)."""
    for _ in range(warmup):
        fn()
    return float(numpy.median([seconds_of(fn, device) for _ in range(repeats)]))
