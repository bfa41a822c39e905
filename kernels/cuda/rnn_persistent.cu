// fusedrnn-compile: -DFUSEDRNN_RELU=0 | -DFUSEDRNN_RELU=1
// Elman RNN (tanh: FUSEDRNN_RELU=0, relu: 1), cupy-persistent: one cooperative launch runs
// the whole sequence of one layer (both directions), forward or backward; blocks meet at a
// grid barrier once per step.
//
// Dimension legend: see persistent_common.cuh (T, B, D, H, G=1, NB, BHS, K, KP, KC, MT).
// Grid (NB, D), THREADS threads; block (j, d) owns units j*BHS … j*BHS+BHS-1.
//
// Forward, step s, row b < n_active[s] at time t:
//   y[t, b, d*H+unit] = hbuf[s&1][d][b][unit]
//                     = act(xproj[t, b, d*H+unit] + h_{s-1}[b, :] · W_hh[d, unit, :])
// ``xproj`` holds x W_ihᵀ + b_ih + b_hh. Nothing else is saved: backward reads h back from y.
// Backward, s = n_steps-1 … 0:
//   dh = dy[t, b] + (last ? dh_n[b] : dG_{s+1}[b, :] · W_hh[d, :, unit]);   dG = dh act'(h)
// Ping-pong buffers as in lstm_persistent.cu.

#include "persistent_common.cuh"

#ifndef FUSEDRNN_RELU
#error "compile with -DFUSEDRNN_RELU=0 (tanh) or 1 (relu)"
#endif

using namespace prnn;

constexpr bool RELU = FUSEDRNN_RELU != 0;

extern "C" __global__ void __launch_bounds__(THREADS, 1)
rnn_persistent_fwd(const scalar_t* __restrict__ xproj,    // [T, B, D*H]
                   const scalar_t* __restrict__ w_hh,     // [D, H, H]
                   scalar_t* hbuf,                        // [2, D, B, KP] h ping-pong, slot 1 = h0
                   scalar_t* y,                           // [T, B, D*H]
                   const long long* __restrict__ lens,    // [B]
                   const int* __restrict__ n_active,      // [T]
                   int n_steps, int T, int B, int H, int bhs, int kc) {
    typedef fwd_op_t op_t;
    const int j = blockIdx.x, d = blockIdx.y, D = gridDim.y;
    const Layout<op_t> L(H, bhs, kc, B);
    require_smem(L.bytes);
    PRNN_DYNAMIC_SMEM(smem);
    op_t* sw = reinterpret_cast<op_t*>(smem);
    op_t* sa = reinterpret_cast<op_t*>(smem + L.off_a);
    float* sacc = reinterpret_cast<float*>(smem + L.off_acc);

    load_w_forward(L, sw, w_hh + (long long)d * H * H, H, j, bhs);
    __syncthreads();

    for (int s = 0; s < n_steps; ++s) {
        const int n_act = n_active[s];
        const int mt = (n_act + TILE - 1) / TILE;
        auto o_y = [&](int b, int unit) {                  // [t, b, d*H + unit] in y and xproj
            const long long t = row_time(d, s, lens[b]);
            return (t * B + b) * D * H + (long long)d * H + unit;
        };
        // This step's xproj into L2 while the GEMM runs (see lstm_persistent.cu).
        for_each_unit(n_act, bhs, j, H, [&](int b, int, int unit) {
            prefetch_l2(xproj + o_y(b, unit));
        });
        const scalar_t* h_prev = ping_pong(hbuf, (s + 1) & 1, D, d, B, L.kp);    // [B, KP]
        block_gemm(L, sw, sa, sacc, h_prev, n_act, mt);

        scalar_t* h_next = ping_pong(hbuf, s & 1, D, d, B, L.kp);
        for_each_unit(n_act, bhs, j, H, [&](int b, int u, int unit) {
            const long long o = o_y(b, unit);
            const float a = gemm_result(sacc, mt, L.npad, b, u) + to_float(xproj[o]);
            const scalar_t h = from_float(rnn_activation(a, RELU));
            y[o] = h;
            h_next[(long long)b * L.kp + unit] = h;
        });
        grid_sync();
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
rnn_persistent_bwd(const scalar_t* __restrict__ dy,       // [T, B, D*H]
                   const scalar_t* __restrict__ dh_n,     // [D, B, H]
                   const scalar_t* __restrict__ w_hh,     // [D, H, H]
                   const scalar_t* __restrict__ y,        // [T, B, D*H] from the forward
                   float* dg,                             // [D, T, B, H] out: gate gradients
                   scalar_t* gbuf_lo,                     // [2, D, B, KP] dG ping-pong (bf16)
                   float* gbuf_f32,                       // [2, D, B, KP] dG (fp32, fp16)
                   const long long* __restrict__ lens,    // [B]
                   const int* __restrict__ n_active,      // [T]
                   int n_steps, int T, int B, int H, int bhs, int kc) {
    typedef bwd_op_t op_t;
    const int j = blockIdx.x, d = blockIdx.y, D = gridDim.y;
    const Layout<op_t> L(H, bhs, kc, B);
    require_smem(L.bytes);
    PRNN_DYNAMIC_SMEM(smem);
    op_t* sw = reinterpret_cast<op_t*>(smem);
    op_t* sa = reinterpret_cast<op_t*>(smem + L.off_a);
    float* sacc = reinterpret_cast<float*>(smem + L.off_acc);
    op_t* gbuf = operand_buffer<op_t>(gbuf_lo, gbuf_f32);

    load_w_backward(L, sw, w_hh + (long long)d * H * H, H, H, j, bhs);
    __syncthreads();

    for (int s = n_steps - 1; s >= 0; --s) {
        const int n_act = n_active[s];
        const int n_next = s + 1 < n_steps ? n_active[s + 1] : 0;
        const int mt = (n_next + TILE - 1) / TILE;
        auto o_y = [&](int b, int unit) {                  // [t, b, d*H + unit] in y and dy
            const long long t = row_time(d, s, lens[b]);
            return (t * B + b) * D * H + (long long)d * H + unit;
        };
        // dy and h into L2 while the GEMM runs (see lstm_persistent.cu).
        for_each_unit(n_act, bhs, j, H, [&](int b, int, int unit) {
            prefetch_l2(dy + o_y(b, unit));
            prefetch_l2(y + o_y(b, unit));
        });
        if (mt > 0)
            block_gemm(L, sw, sa, sacc, ping_pong(gbuf, (s + 1) & 1, D, d, B, L.kp), n_next, mt);

        op_t* g_next = ping_pong(gbuf, s & 1, D, d, B, L.kp);
        for_each_unit(n_act, bhs, j, H, [&](int b, int u, int unit) {
            const long long t = row_time(d, s, lens[b]);
            const bool last = b >= n_next;
            const long long o = o_y(b, unit);
            const long long o_state = ((long long)d * B + b) * H + unit;
            const float rec = last ? to_float(dh_n[o_state]) : gemm_result(sacc, mt, L.npad, b, u);
            const float g = (to_float(dy[o]) + rec) * rnn_activation_grad(to_float(y[o]), RELU);
            dg[(((long long)d * T + t) * B + b) * H + unit] = g;
            g_next[(long long)b * L.kp + unit] = from_float_as<op_t>(g);
        });
        grid_sync();
    }
}
