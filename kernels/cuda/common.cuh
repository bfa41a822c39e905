// Shared by every CUDA C kernel of fusedrnn (the cupy-step and cupy-persistent families).
//
// * scalar_t: the model dtype, chosen at compile time by FUSEDRNN_DTYPE
//   (0 fp32 -> float, 1 fp16 -> __half, 2 bf16 -> __nv_bfloat16). The loader passes
//   -DFUSEDRNN_DTYPE=<n>; kernels/cuda/loader.py DTYPE_CODES holds the same numbers.
// * to_float / from_float: loads and stores convert at the edge, all arithmetic is fp32.
// * The cells' gate equations, forward and backward, in fp32: the same formulas as
//   kernels/triton/cell_math.py and fusedrnn.reference (derivatives written from the
//   activations' outputs), so the two CUDA families share one copy of the math.
//
// Only <cuda_fp16.h> and <cuda_bf16.h> are included, and no C++ standard library header (NVRTC
// has none of its own). Both are toolkit headers: nvcc finds them itself, NVRTC only through an
// -I to the toolkit's include folder (CuPy's, or the loader's: see "Toolkit pieces" in loader.py).

#pragma once

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#ifndef FUSEDRNN_DTYPE
#error "compile with -DFUSEDRNN_DTYPE=0 (fp32), 1 (fp16) or 2 (bf16)"
#endif

#if FUSEDRNN_DTYPE == 0
typedef float scalar_t;
#elif FUSEDRNN_DTYPE == 1
typedef __half scalar_t;
#elif FUSEDRNN_DTYPE == 2
typedef __nv_bfloat16 scalar_t;
#else
#error "FUSEDRNN_DTYPE must be 0 (fp32), 1 (fp16) or 2 (bf16)"
#endif

// ---------------------------------------------------------------------------------------------
// Conversions. Overloads for every storage type (not only scalar_t), so a kernel can read an
// fp32 buffer and a model-dtype buffer with the same spelling.

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float_as(float x);
template <> __device__ __forceinline__ float from_float_as<float>(float x) { return x; }
// Round to nearest even, as torch's .to(float16/bfloat16) does.
template <> __device__ __forceinline__ __half from_float_as<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float_as<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// fp32 -> the model dtype.
__device__ __forceinline__ scalar_t from_float(float x) { return from_float_as<scalar_t>(x); }

// ---------------------------------------------------------------------------------------------
// Activations. expf / tanhf (full precision, not the __expf intrinsic): the step kernels are
// memory-bound, so the few extra instructions cost nothing measurable, and the fp32 parity
// test compares against a float64 reference.

__device__ __forceinline__ float sigmoidf_(float x) {
    // x -> -inf: expf(-x) = inf and 1 / inf = 0, so no NaN at either end.
    return 1.0f / (1.0f + expf(-x));
}

__device__ __forceinline__ float tanhf_(float x) { return tanhf(x); }

// ---------------------------------------------------------------------------------------------
// LSTM (gate order i f g o). Forward: pre-activations -> gates and the new c; h = o * tanh(c).

__device__ __forceinline__ void lstm_forward(float a_i, float a_f, float a_g, float a_o, float c_prev,
                                             float &i, float &f, float &g, float &o, float &c) {
    i = sigmoidf_(a_i);
    f = sigmoidf_(a_f);
    g = tanhf_(a_g);
    o = sigmoidf_(a_o);
    c = f * c_prev + i * g;
}

// Backward from dh (dL/d(o tanh c)) and dc (dL/dc from the step after): the four gate
// pre-activation gradients and dc_total; the gradient for c_prev is dc_total * f.
__device__ __forceinline__ void lstm_backward(float dh, float dc, float i, float f, float g, float o,
                                              float tanh_c, float c_prev,
                                              float &dg_i, float &dg_f, float &dg_g, float &dg_o,
                                              float &dc_total) {
    dc_total = dc + dh * o * (1.0f - tanh_c * tanh_c);
    dg_i = dc_total * g * i * (1.0f - i);
    dg_f = dc_total * c_prev * f * (1.0f - f);
    dg_g = dc_total * i * (1.0f - g * g);
    dg_o = dh * tanh_c * o * (1.0f - o);
}

// ---------------------------------------------------------------------------------------------
// GRU (gate order r z n; reset applied after the recurrent matmul, as cuDNN). x_* are the input
// projections (with b_i*), gh_r / gh_z the recurrent parts (with b_hr / b_hz), ghn = W_hn h + b_hn.
// Returns the new h.

__device__ __forceinline__ float gru_forward(float x_r, float x_z, float x_n, float gh_r, float gh_z,
                                             float ghn, float h_prev, float &r, float &z, float &n) {
    r = sigmoidf_(x_r + gh_r);
    z = sigmoidf_(x_z + gh_z);
    n = tanhf_(x_n + r * ghn);
    return (1.0f - z) * n + z * h_prev;
}

// Backward: dg_r, dg_z, dg_n are the pre-activation gradients seen by the input projection;
// direct = dh * z reaches h_prev without the matmul. The recurrent product sees dg_n * r in
// place of dg_n (d ghn = dg_n * r).
__device__ __forceinline__ void gru_backward(float dh, float r, float z, float n, float ghn, float h_prev,
                                             float &dg_r, float &dg_z, float &dg_n, float &direct) {
    dg_n = dh * (1.0f - z) * (1.0f - n * n);
    dg_z = dh * (h_prev - n) * z * (1.0f - z);
    dg_r = dg_n * ghn * r * (1.0f - r);
    direct = dh * z;
}

// ---------------------------------------------------------------------------------------------
// Elman RNN: act = tanh or relu; the derivative is written from h = act(a).

__device__ __forceinline__ float rnn_activation(float a, bool relu) {
    return relu ? fmaxf(a, 0.0f) : tanhf_(a);
}

__device__ __forceinline__ float rnn_activation_grad(float h, bool relu) {
    return relu ? (h > 0.0f ? 1.0f : 0.0f) : 1.0f - h * h;
}

// ---------------------------------------------------------------------------------------------
// Variable-length time indexing (both CUDA families). Rows are sorted by length, longest first.
// Direction 0 processes step s at time s; direction 1 (reverse) starts at each sequence's own
// last element, so row b processes step s at time len_b - 1 - s. int64: every activation
// offset built from a time is int64 (T*B*G*H can pass 2^31).

__device__ __forceinline__ long long step_time(int d, int s, long long len) {
    return d == 0 ? (long long)s : len - 1 - s;
}

// The time of the step processed just before step s (s > 0) in direction d.
__device__ __forceinline__ long long prev_step_time(int d, long long t) {
    return d == 0 ? t - 1 : t + 1;
}
