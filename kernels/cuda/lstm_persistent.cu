// LSTM, cupy-persistent: one cooperative launch runs the whole sequence of one layer (both
// directions), forward or backward; blocks meet at a grid barrier once per step.
//
// Dimension legend: see persistent_common.cuh (T, B, D, H, G=4, NB, BHS, K, KP, KC, MT).
// Grid (NB, D), THREADS threads; block (j, d) owns units j*BHS … of gates i f g o.
//
// Forward, step s = 0 … n_steps-1, row b < n_active[s] at time t (row_time):
//   a[b, g*BHS+u] = h_{s-1}[b, :] · W_hh[d, g*H+unit, :]      (block GEMM, h from hbuf)
//   i f g o, c = lstm_forward(a + xproj[t, b, d, g*H+unit], c_{s-1})
//   y[t, b, d*H+unit] = hbuf[s&1][d][b][unit] = o tanh c;  ws[d, t, b] = (i, f, g, o, c)
// Backward, s = n_steps-1 … 0 (same blocks):
//   rec[b, u]  = dG_{s+1}[b, :] · W_hh[d, :, unit]             (block GEMM, dG from gbuf;
//                                                                zero for a row's last step)
//   dh = dy[t, b] + (last ? dh_n[b] : rec);  dc = last ? dc_n[b] : dc_carry[b]
//   dG = lstm_backward(...) -> dg[d, t, b, g*H+unit] (fp32) and gbuf[s&1] (GEMM operand)
//   dc_carry[b] = dc_total f        (after the loop: dL/dc0)
//
// Ping-pong buffers (host-allocated, zero past H / 4H): step s reads slot (s+1)&1 — what every
// block of the direction wrote one step earlier, or h0 (forward slot 1 on entry) — and writes
// slot s&1, which nobody reads before the next grid barrier.

#include "persistent_common.cuh"

using namespace prnn;

extern "C" __global__ void __launch_bounds__(THREADS, 1)
lstm_persistent_fwd(const scalar_t* __restrict__ xproj,   // [T, B, D*4H], both biases folded in
                    const scalar_t* __restrict__ w_hh,    // [D, 4H, H]
                    scalar_t* hbuf,                       // [2, D, B, KP] h ping-pong, slot 1 = h0
                    float* cstate,                        // [D, B, H] c (c0 on entry), fp32
                    scalar_t* y,                          // [T, B, D*H]
                    float* ws,                            // [D, T, B, 5H]: i f g o c
                    const long long* __restrict__ lens,   // [B]
                    const int* __restrict__ n_active,     // [T] rows running at step s
                    int n_steps, int T, int B, int H, int bhs, int kc) {
    typedef fwd_op_t op_t;
    const int j = blockIdx.x, d = blockIdx.y, D = gridDim.y;
    const Layout<op_t> L(H, 4 * bhs, kc, B);
    require_smem(L.bytes);
    PRNN_DYNAMIC_SMEM(smem);
    op_t* sw = reinterpret_cast<op_t*>(smem);
    op_t* sa = reinterpret_cast<op_t*>(smem + L.off_a);
    float* sacc = reinterpret_cast<float*>(smem + L.off_acc);

    load_w_forward(L, sw, w_hh + (long long)d * 4 * H * H, H, j, bhs);
    __syncthreads();

    for (int s = 0; s < n_steps; ++s) {
        const int n_act = n_active[s];
        const int mt = (n_act + TILE - 1) / TILE;
        // xproj[t, b, d, g*H+unit] of this step's rows, as pointers; requested into L2 now so
        // that the DRAM latency overlaps the staging and the GEMM instead of following them.
        auto x_row = [&](int b, int unit) {
            const long long t = row_time(d, s, lens[b]);
            return xproj + ((t * B + b) * D + d) * 4 * H + unit;
        };
        for_each_unit(n_act, bhs, j, H, [&](int b, int, int unit) {
            for (int g = 0; g < 4; ++g) prefetch_l2(x_row(b, unit) + (long long)g * H);
        });
        const scalar_t* h_prev = ping_pong(hbuf, (s + 1) & 1, D, d, B, L.kp);    // [B, KP]
        block_gemm(L, sw, sa, sacc, h_prev, n_act, mt);

        scalar_t* h_next = ping_pong(hbuf, s & 1, D, d, B, L.kp);
        for_each_unit(n_act, bhs, j, H, [&](int b, int u, int unit) {
            const long long t = row_time(d, s, lens[b]);
            const scalar_t* xp = x_row(b, unit);
            float a[4];
            for (int g = 0; g < 4; ++g)
                a[g] = gemm_result(sacc, mt, L.npad, b, g * bhs + u)
                     + to_float(xp[(long long)g * H]);
            float* c_state = cstate + ((long long)d * B + b) * H + unit;
            float gi, gf, gg, go, c;
            lstm_forward(a[0], a[1], a[2], a[3], *c_state, gi, gf, gg, go, c);
            *c_state = c;
            const scalar_t h = from_float(go * tanhf_(c));
            y[(t * B + b) * D * H + (long long)d * H + unit] = h;
            h_next[(long long)b * L.kp + unit] = h;
            float* w = ws + (((long long)d * T + t) * B + b) * 5 * H + unit;
            w[0] = gi;
            w[H] = gf;
            w[2 * H] = gg;
            w[3 * H] = go;
            w[4 * H] = c;
        });
        grid_sync();
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
lstm_persistent_bwd(const scalar_t* __restrict__ dy,      // [T, B, D*H]
                    const scalar_t* __restrict__ dh_n,    // [D, B, H]
                    const scalar_t* __restrict__ dc_n,    // [D, B, H]
                    const scalar_t* __restrict__ w_hh,    // [D, 4H, H]
                    const float* __restrict__ ws,         // [D, T, B, 5H] from the forward
                    const scalar_t* __restrict__ c0,      // [D, B, H]
                    float* dg,                            // [D, T, B, 4H] out: gate gradients
                    float* dc,                            // [D, B, H] carry, zero on entry
                    scalar_t* gbuf_lo,                    // [2, D, B, KP] dG ping-pong (bf16)
                    float* gbuf_f32,                      // [2, D, B, KP] dG (fp32, fp16)
                    const long long* __restrict__ lens,   // [B]
                    const int* __restrict__ n_active,     // [T]
                    int n_steps, int T, int B, int H, int bhs, int kc) {
    typedef bwd_op_t op_t;
    const int j = blockIdx.x, d = blockIdx.y, D = gridDim.y;
    const Layout<op_t> L(4 * H, bhs, kc, B);
    require_smem(L.bytes);
    PRNN_DYNAMIC_SMEM(smem);
    op_t* sw = reinterpret_cast<op_t*>(smem);
    op_t* sa = reinterpret_cast<op_t*>(smem + L.off_a);
    float* sacc = reinterpret_cast<float*>(smem + L.off_acc);
    op_t* gbuf = operand_buffer<op_t>(gbuf_lo, gbuf_f32);

    load_w_backward(L, sw, w_hh + (long long)d * 4 * H * H, H, 4 * H, j, bhs);
    __syncthreads();

    for (int s = n_steps - 1; s >= 0; --s) {
        const int n_act = n_active[s];
        const int n_next = s + 1 < n_steps ? n_active[s + 1] : 0;   // rows with a step s+1
        const int mt = (n_next + TILE - 1) / TILE;
        auto ws_row = [&](int b, int unit, long long t) {            // ws[d, t, b, unit]
            return ws + (((long long)d * T + t) * B + b) * 5 * H + unit;
        };
        auto t_prev_of = [&](long long t) { return d == 0 ? t - 1 : t + 1; };
        // dy, the saved gates and c_prev of this step into L2 while the GEMM runs (see forward).
        for_each_unit(n_act, bhs, j, H, [&](int b, int, int unit) {
            const long long t = row_time(d, s, lens[b]);
            prefetch_l2(dy + (t * B + b) * D * H + (long long)d * H + unit);
            for (int k = 0; k < 5; ++k) prefetch_l2(ws_row(b, unit, t) + (long long)k * H);
            if (s > 0) prefetch_l2(ws_row(b, unit, t_prev_of(t)) + 4 * H);
        });
        if (mt > 0)
            block_gemm(L, sw, sa, sacc, ping_pong(gbuf, (s + 1) & 1, D, d, B, L.kp), n_next, mt);

        op_t* g_next = ping_pong(gbuf, s & 1, D, d, B, L.kp);
        for_each_unit(n_act, bhs, j, H, [&](int b, int u, int unit) {
            const long long t = row_time(d, s, lens[b]);
            const bool last = b >= n_next;                   // s == len - 1
            const long long o_state = ((long long)d * B + b) * H + unit;
            const float rec = last ? to_float(dh_n[o_state]) : gemm_result(sacc, mt, L.npad, b, u);
            const float dh = to_float(dy[(t * B + b) * D * H + (long long)d * H + unit]) + rec;
            const float dc_in = last ? to_float(dc_n[o_state]) : dc[o_state];
            const float* w = ws_row(b, unit, t);
            const float gi = w[0], gf = w[H], gg = w[2 * H], go = w[3 * H];
            const float tanh_c = tanhf_(w[4 * H]);
            const float c_prev = s == 0 ? to_float(c0[o_state])
                                        : ws_row(b, unit, t_prev_of(t))[4 * H];
            float dgi, dgf, dgg, dgo, dc_total;
            lstm_backward(dh, dc_in, gi, gf, gg, go, tanh_c, c_prev, dgi, dgf, dgg, dgo, dc_total);
            dc[o_state] = dc_total * gf;
            float* out = dg + (((long long)d * T + t) * B + b) * 4 * H + unit;
            out[0] = dgi;
            out[H] = dgf;
            out[2 * H] = dgg;
            out[3 * H] = dgo;
            op_t* gn = g_next + (long long)b * L.kp + unit;
            gn[0] = from_float_as<op_t>(dgi);
            gn[H] = from_float_as<op_t>(dgf);
            gn[2 * H] = from_float_as<op_t>(dgg);
            gn[3 * H] = from_float_as<op_t>(dgo);
        });
        grid_sync();
    }
}
