// fusedrnn-compile: -DFUSEDRNN_RELU=0 | -DFUSEDRNN_RELU=1
// Elman RNN (tanh or relu), cupy-step family: the per-timestep pointwise kernels. The
// activation is a compile-time choice: -DFUSEDRNN_RELU=1 relu, =0 tanh (first line above:
// the variants tests/cuda_compile.py compiles). The recurrent products are cuBLAS GEMMs issued
// by the launcher (kernels/cuda/rnn_step.py) on the same stream, between launches.
//
// Dimension legend: see lstm_step.cu (T, B, D, s, H, n, rec_rows); G = 1.
//
// Per step s, forward:   rec = h_state[:, :n] @ W_hhᵀ (GEMM, fp32 out)   →  rnn_step_fwd
// Per step s, backward:  rec = dg_state[:, :rec_rows] @ W_hh (GEMM)      →  rnn_step_bwd
// Nothing is saved besides y: backward reads h back from it.

#include "common.cuh"

#ifndef FUSEDRNN_RELU
#error "compile with -DFUSEDRNN_RELU=0 (tanh) or 1 (relu)"
#endif

// The same name as the Triton kernels' RELU constexpr and rnn_persistent.cu's.
constexpr bool RELU = FUSEDRNN_RELU != 0;

// Forward of step s: h = act(xproj + rec) (xproj holds both biases); h_state ← h, y[t, b, d] ← h.
extern "C" __global__ void rnn_step_fwd(
    const float *__restrict__ rec,          // [D, n, H]
    const scalar_t *__restrict__ xproj,     // [T, B, D*H]
    const long long *__restrict__ lens,     // [B]
    scalar_t *__restrict__ h_state,         // [D, B, H]
    scalar_t *__restrict__ y,               // [T, B, D*H]
    int s, int n, int B, int H, int D) {
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)n * H) return;
    const int d = blockIdx.y;
    const long long b = e / H, j = e % H;
    const long long t = step_time(d, s, lens[b]);
    const long long o_y = (t * B + b) * ((long long)D * H) + (long long)d * H + j;
    const float a = rec[((long long)d * n + b) * H + j] + to_float(xproj[o_y]);
    const scalar_t h = from_float(rnn_activation(a, RELU));
    h_state[((long long)d * B + b) * H + j] = h;
    y[o_y] = h;
}

// Backward of step s (s = T-1 … 0):
//   dh = dy + (row's last step ? dh_n : rec (= dG[s+1] @ W_hh))     dG = dh act'(h)
// act' is written from the stored output h (1 - h² for tanh, [h > 0] for relu).
extern "C" __global__ void rnn_step_bwd(
    const float *__restrict__ rec,          // [D, rec_rows, H]
    const scalar_t *__restrict__ dy,        // [T, B, D*H]
    const scalar_t *__restrict__ dh_n,      // [D, B, H]
    const scalar_t *__restrict__ y,         // [T, B, D*H]
    const long long *__restrict__ lens,     // [B]
    float *__restrict__ dg,                 // [D, T, B, H]
    float *__restrict__ dg_state,           // [D, B, H]
    int s, int n, int rec_rows, int T, int B, int H, int D) {
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)n * H) return;
    const int d = blockIdx.y;
    const long long b = e / H, j = e % H;
    const long long len = lens[b];
    const long long t = step_time(d, s, len);
    const bool last = s == len - 1;
    const long long o_state = ((long long)d * B + b) * H + j;
    const long long o_y = (t * B + b) * ((long long)D * H) + (long long)d * H + j;
    const float dh = to_float(dy[o_y]) +
                     (last ? to_float(dh_n[o_state]) : rec[((long long)d * rec_rows + b) * H + j]);
    const float g = dh * rnn_activation_grad(to_float(y[o_y]), RELU);
    dg[(((long long)d * T + t) * B + b) * H + j] = g;
    dg_state[o_state] = g;
}
