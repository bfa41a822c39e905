// The GPU check's probes (python -m fusedrnn gpucheck, phases env and floors): kernels that
// exercise the toolchain and measure the device, not parts of any backend.
//
// * probe_bf16_mma: one warp multiplies two 16x16 bf16 tiles on the tensor cores (wmma, fp32
//   accumulate), the path cupy-persistent takes for fp16/bf16. It includes <cuda_bf16.h> (via
//   common.cuh) and <mma.h> (whose crt/mma.h NVRTC finds only with the toolkit headers
//   installed), so a missing header fails here, in the first seconds of the check, not inside
//   a backend's first launch. The host compares c with torch's matmul.
// * probe_empty: does nothing (its pointer only tells the loader the device and stream);
//   back-to-back launches measure the launch path's cost.
//
// Dimension legend: a [16, 16] row-major, b [16, 16] col-major (element (k, n) at b[n*16 + k]),
// c [16, 16] row-major fp32.

#include "common.cuh"

#include <mma.h>

extern "C" __global__ void probe_bf16_mma(const __nv_bfloat16* __restrict__ a,
                                          const __nv_bfloat16* __restrict__ b,
                                          float* __restrict__ c) {
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::fill_fragment(fc, 0.0f);
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

extern "C" __global__ void probe_empty(int* __restrict__ unused) {}
