// LSTM, cupy-step family: the per-timestep pointwise kernels. The recurrent products are cuBLAS
// GEMMs issued by the launcher (kernels/cuda/lstm_step.py) on the same stream, between launches.
//
// Dimension legend (every cupy-step kernel file):
//   T  sequence length (padded)       B  batch (rows sorted by length, longest first)
//   D  directions (1 or 2)            s  processing step, 0 … T-1 (blockIdx.y is the direction d)
//   H  cell width                     Hr width of h (H; P with a projection)
//   n  rows active at step s (a prefix b < n of the sorted batch)
//   rec_rows  rows whose recurrent product was computed (those with a step after s in
//             backward: the rows active at s+1)
// One thread per (row b, unit j) of one direction, all gates of that unit; threads run over
// the flat index e = b * width + j so consecutive threads touch consecutive units (coalesced).
//
// Per step s, forward:   rec = h_state[:, :n] @ W_hhᵀ (GEMM, fp32 out)  →  lstm_step_fwd
//                        [projection: hp = h_out[:, :n] @ W_hrᵀ (GEMM)  →  lstm_proj_store]
// Per step s, backward:  rec = dg_state[:, :rec_rows] @ W_hh (GEMM)     →  lstm_step_bwd
//                        [projection: rec → lstm_proj_bwd_dh → dm = dh_state @ W_hr (GEMM)
//                         → lstm_step_bwd with has_proj, dh = dm]

#include "common.cuh"

// Forward gate kernel of step s:
//   a = rec + xproj (both biases are in xproj)     i f g o, c = f c_prev + i g, h = o tanh c
//   ws[d, t, b] = (i, f, g, o, c); c_state ← c; h_out ← h (o tanh c before the projection);
//   y[t, b, d] ← h unless has_proj (then lstm_proj_store writes y).
extern "C" __global__ void lstm_step_fwd(
    const float *__restrict__ rec,          // [D, n, 4H]   h_prev @ W_hhᵀ of the active rows
    const scalar_t *__restrict__ xproj,     // [T, B, D*4H] x W_ihᵀ + b_ih + b_hh
    const long long *__restrict__ lens,     // [B]
    float *__restrict__ c_state,            // [D, B, H]    in: c_prev, out: c
    scalar_t *__restrict__ h_out,           // [D, B, H]    h (no projection) or o tanh c
    scalar_t *__restrict__ y,               // [T, B, D*H]  (not written with a projection)
    float *__restrict__ ws,                 // [D, T, B, 5H]
    int s, int n, int T, int B, int H, int D, bool has_proj) {
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)n * H) return;
    const int d = blockIdx.y;
    const long long b = e / H, j = e % H;
    const long long t = step_time(d, s, lens[b]);
    const long long G = 4LL * H;

    const float *r = rec + ((long long)d * n + b) * G + j;
    const scalar_t *x = xproj + (t * B + b) * (D * G) + d * G + j;
    const long long o_state = ((long long)d * B + b) * H + j;
    float i, f, g, o, c;
    lstm_forward(r[0] + to_float(x[0]), r[H] + to_float(x[H]), r[2 * H] + to_float(x[2 * H]),
                 r[3 * H] + to_float(x[3 * H]), c_state[o_state], i, f, g, o, c);

    float *w = ws + (((long long)d * T + t) * B + b) * (5LL * H) + j;
    w[0] = i;
    w[H] = f;
    w[2 * H] = g;
    w[3 * H] = o;
    w[4 * H] = c;
    c_state[o_state] = c;
    const scalar_t h = from_float(o * tanhf_(c));
    h_out[o_state] = h;
    if (!has_proj) y[(t * B + b) * ((long long)D * H) + (long long)d * H + j] = h;
}

// Projection output of step s: h = hp (= (o tanh c) @ W_hrᵀ, fp32 from the GEMM) rounded to the
// model dtype, stored to y at each row's time and to h_state (the next step's GEMM input).
extern "C" __global__ void lstm_proj_store(
    const float *__restrict__ hp,           // [D, n, P]
    const long long *__restrict__ lens,     // [B]
    scalar_t *__restrict__ h_state,         // [D, B, P]
    scalar_t *__restrict__ y,               // [T, B, D*P]
    int s, int n, int B, int P, int D) {
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)n * P) return;
    const int d = blockIdx.y;
    const long long b = e / P, p = e % P;
    const long long t = step_time(d, s, lens[b]);
    const scalar_t h = from_float(hp[((long long)d * n + b) * P + p]);
    h_state[((long long)d * B + b) * P + p] = h;
    y[(t * B + b) * ((long long)D * P) + (long long)d * P + p] = h;
}

// Projection, backward of step s, first half: dh = dy + (row's last step ? dh_n : rec), with
// rec = dG[s+1] @ W_hh [.., P]. Stored to dh_proj (for dW_hr after the loop) and, contiguous
// over the active rows, to dh_state (the input of the dm = dh @ W_hr GEMM).
extern "C" __global__ void lstm_proj_bwd_dh(
    const float *__restrict__ rec,          // [D, rec_rows, P]
    const scalar_t *__restrict__ dy,        // [T, B, D*P]
    const scalar_t *__restrict__ dh_n,      // [D, B, P]
    const long long *__restrict__ lens,     // [B]
    float *__restrict__ dh_proj,            // [D, T, B, P]
    float *__restrict__ dh_state,           // [D, n, P]
    int s, int n, int rec_rows, int T, int B, int P, int D) {
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)n * P) return;
    const int d = blockIdx.y;
    const long long b = e / P, p = e % P;
    const long long len = lens[b];
    const long long t = step_time(d, s, len);
    const bool last = s == len - 1;           // the row's last forward step: no recurrent term
    const float carried = last ? to_float(dh_n[((long long)d * B + b) * P + p])
                               : rec[((long long)d * rec_rows + b) * P + p];
    const float dh = to_float(dy[(t * B + b) * ((long long)D * P) + (long long)d * P + p]) + carried;
    dh_proj[(((long long)d * T + t) * B + b) * P + p] = dh;
    dh_state[((long long)d * n + b) * P + p] = dh;
}

// Backward gate kernel of step s (s = T-1 … 0):
//   dh = has_proj ? rec (= dh @ W_hr)  :  dy + (last ? dh_n : rec (= dG[s+1] @ W_hh))
//   dc = (last ? dc_n : dc_state) + dh o (1 - tanh² c)
//   dG = (dc g σ'(i), dc c_prev σ'(f), dc i tanh'(g), dh tanh(c) σ'(o))  → dg and dg_state
//   dc_state ← dc f   (∂L/∂c_prev; after step 0 it is ∂L/∂c0)
// c_prev is c0 at step 0, else the c saved in ws at the previous step's time.
extern "C" __global__ void lstm_step_bwd(
    const float *__restrict__ rec,          // [D, rec_rows, H]
    const scalar_t *__restrict__ dy,        // [T, B, D*H]  (unused with a projection)
    const scalar_t *__restrict__ dh_n,      // [D, B, H]    (unused with a projection)
    const scalar_t *__restrict__ dc_n,      // [D, B, H]
    const float *__restrict__ ws,           // [D, T, B, 5H]
    const scalar_t *__restrict__ c0,        // [D, B, H]
    const long long *__restrict__ lens,     // [B]
    float *__restrict__ dc_state,           // [D, B, H]
    float *__restrict__ dg,                 // [D, T, B, 4H]
    float *__restrict__ dg_state,           // [D, B, 4H]
    int s, int n, int rec_rows, int T, int B, int H, int D, bool has_proj) {
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)n * H) return;
    const int d = blockIdx.y;
    const long long b = e / H, j = e % H;
    const long long len = lens[b];
    const long long t = step_time(d, s, len);
    const bool last = s == len - 1;
    const long long o_state = ((long long)d * B + b) * H + j;
    const long long o_rec = ((long long)d * rec_rows + b) * H + j;

    float dh;
    if (has_proj) {
        dh = rec[o_rec];
    } else {
        dh = to_float(dy[(t * B + b) * ((long long)D * H) + (long long)d * H + j]) +
             (last ? to_float(dh_n[o_state]) : rec[o_rec]);
    }
    const float dc_in = last ? to_float(dc_n[o_state]) : dc_state[o_state];

    const long long W = 5LL * H;
    const float *w = ws + (((long long)d * T + t) * B + b) * W + j;
    const float c_prev = s == 0 ? to_float(c0[o_state])
                                : ws[(((long long)d * T + prev_step_time(d, t)) * B + b) * W + 4 * H + j];
    const float i = w[0], f = w[H], g = w[2 * H], o = w[3 * H];
    float dg_i, dg_f, dg_g, dg_o, dc_total;
    lstm_backward(dh, dc_in, i, f, g, o, tanhf_(w[4 * H]), c_prev, dg_i, dg_f, dg_g, dg_o, dc_total);

    const long long G = 4LL * H;
    float *out = dg + (((long long)d * T + t) * B + b) * G + j;
    float *out_state = dg_state + ((long long)d * B + b) * G + j;
    out[0] = dg_i;
    out[H] = dg_f;
    out[2 * H] = dg_g;
    out[3 * H] = dg_o;
    out_state[0] = dg_i;
    out_state[H] = dg_f;
    out_state[2 * H] = dg_g;
    out_state[3 * H] = dg_o;
    dc_state[o_state] = dc_total * f;
}
