// GRU, cupy-step family: the per-timestep pointwise kernels (gate order r z n; the reset gate
// applies after the recurrent matmul, as cuDNN). The recurrent products are cuBLAS GEMMs issued
// by the launcher (kernels/cuda/gru_step.py) on the same stream, between launches.
//
// Dimension legend: see lstm_step.cu (T, B, D, s, H, n, rec_rows); G = 3.
//
// Per step s, forward:   rec = h_state[:, :n] @ W_hhᵀ (GEMM, fp32 out, no bias)  →  gru_step_fwd
// Per step s, backward:  rec = dgh_state[:, :rec_rows] @ W_hh (GEMM)             →  gru_step_bwd

#include "common.cuh"

// Forward of step s:
//   ghn = rec_n + b_hn      r = σ(x_r + rec_r)   z = σ(x_z + rec_z)   n = tanh(x_n + r ghn)
//   h = (1 - z) n + z h_prev      (xproj holds x W_ihᵀ + b_ih + (b_hr, b_hz, 0))
//   ws[d, t, b] = (r, z, n, ghn); h_state ← h; y[t, b, d] ← h.
extern "C" __global__ void gru_step_fwd(
    const float *__restrict__ rec,          // [D, n, 3H]   h_prev @ W_hhᵀ of the active rows
    const scalar_t *__restrict__ xproj,     // [T, B, D*3H]
    const scalar_t *__restrict__ b_hn,      // [D, H]       read only if has_bhn
    const long long *__restrict__ lens,     // [B]
    scalar_t *__restrict__ h_state,         // [D, B, H]    in: h_prev, out: h
    scalar_t *__restrict__ y,               // [T, B, D*H]
    float *__restrict__ ws,                 // [D, T, B, 4H]
    int s, int n, int T, int B, int H, int D, bool has_bhn) {
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)n * H) return;
    const int d = blockIdx.y;
    const long long b = e / H, j = e % H;
    const long long t = step_time(d, s, lens[b]);
    const long long G = 3LL * H;

    const float *r_ = rec + ((long long)d * n + b) * G + j;
    const scalar_t *x = xproj + (t * B + b) * (D * G) + d * G + j;
    const long long o_state = ((long long)d * B + b) * H + j;
    const float ghn = r_[2 * H] + (has_bhn ? to_float(b_hn[(long long)d * H + j]) : 0.0f);
    float r, z, nn;
    const float h = gru_forward(to_float(x[0]), to_float(x[H]), to_float(x[2 * H]), r_[0], r_[H], ghn,
                                to_float(h_state[o_state]), r, z, nn);

    float *w = ws + (((long long)d * T + t) * B + b) * (4LL * H) + j;
    w[0] = r;
    w[H] = z;
    w[2 * H] = nn;
    w[3 * H] = ghn;
    const scalar_t h_out = from_float(h);
    h_state[o_state] = h_out;
    y[(t * B + b) * ((long long)D * H) + (long long)d * H + j] = h_out;
}

// Backward of step s (s = T-1 … 0):
//   dh = dy + (row's last step ? dh_n : rec (= dGh[s+1] @ W_hh) + carry)
//   dn = dh (1 - z)(1 - n²)    dz = dh (h_prev - n) σ'(z)    dr = dn ghn σ'(r)
//   dgi[t, b] = (dr, dz, dn)   dgh[t, b] = dgh_state[b] = (dr, dz, dn r)   carry ← dh z
// h_prev is h0 at step 0, else y at the previous step's time (both in the model dtype, the
// values the forward read).
extern "C" __global__ void gru_step_bwd(
    const float *__restrict__ rec,          // [D, rec_rows, H]
    const scalar_t *__restrict__ dy,        // [T, B, D*H]
    const scalar_t *__restrict__ dh_n,      // [D, B, H]
    const float *__restrict__ ws,           // [D, T, B, 4H]
    const scalar_t *__restrict__ h0,        // [D, B, H]
    const scalar_t *__restrict__ y,         // [T, B, D*H]
    const long long *__restrict__ lens,     // [B]
    float *__restrict__ carry,              // [D, B, H]    the direct h_prev → h path, dh z
    float *__restrict__ dgi,                // [D, T, B, 3H]
    float *__restrict__ dgh,                // [D, T, B, 3H]
    float *__restrict__ dgh_state,          // [D, B, 3H]
    int s, int n, int rec_rows, int T, int B, int H, int D) {
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)n * H) return;
    const int d = blockIdx.y;
    const long long b = e / H, j = e % H;
    const long long len = lens[b];
    const long long t = step_time(d, s, len);
    const bool last = s == len - 1;
    const long long o_state = ((long long)d * B + b) * H + j;
    const long long y_row = (long long)D * H;

    const float dh = to_float(dy[(t * B + b) * y_row + (long long)d * H + j]) +
                     (last ? to_float(dh_n[o_state])
                           : rec[((long long)d * rec_rows + b) * H + j] + carry[o_state]);
    const float h_prev = s == 0 ? to_float(h0[o_state])
                                : to_float(y[(prev_step_time(d, t) * B + b) * y_row + (long long)d * H + j]);
    const float *w = ws + (((long long)d * T + t) * B + b) * (4LL * H) + j;
    const float r = w[0];
    float dr, dz, dn, direct;
    gru_backward(dh, r, w[H], w[2 * H], w[3 * H], h_prev, dr, dz, dn, direct);

    const long long G = 3LL * H;
    const long long o_g = (((long long)d * T + t) * B + b) * G + j;
    dgi[o_g] = dr;
    dgi[o_g + H] = dz;
    dgi[o_g + 2 * H] = dn;
    dgh[o_g] = dr;
    dgh[o_g + H] = dz;
    dgh[o_g + 2 * H] = dn * r;
    float *st = dgh_state + ((long long)d * B + b) * G + j;
    st[0] = dr;
    st[H] = dz;
    st[2 * H] = dn * r;
    carry[o_state] = direct;
}
