// The GPU check's grid-barrier probe (python -m fusedrnn gpucheck, phase floors): the cost of
// one cooperative_groups grid.sync(), the barrier cupy-persistent meets once per step.
// Launched cooperatively (kernels/cuda/probe.py) with 132 or 264 blocks of 128 threads;
// `rounds` barriers back to back, so the kernel's time over `rounds` is one barrier's latency.
// Block 0 writes how many rounds it saw, so the compiler cannot drop the loop.

#include "common.cuh"

#include <cooperative_groups.h>

extern "C" __global__ void probe_grid_sync(int rounds, int* __restrict__ out) {
    cooperative_groups::grid_group grid = cooperative_groups::this_grid();
    int seen = 0;
    for (int r = 0; r < rounds; ++r) {
        grid.sync();
        ++seen;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = seen;
}
