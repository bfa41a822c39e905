// GRU, cupy-persistent: one cooperative launch runs the whole sequence of one layer (both
// directions), forward or backward; blocks meet at a grid barrier once per step.
//
// Dimension legend: see persistent_common.cuh (T, B, D, H, G=3, NB, BHS, K, KP, KC, MT).
// Grid (NB, D), THREADS threads; block (j, d) owns units j*BHS … of gates r z n.
//
// Forward, step s, row b < n_active[s] at time t:
//   gh[b, g*BHS+u] = h_{s-1}[b, :] · W_hh[d, g*H+unit, :]      (block GEMM, h from hbuf)
//   ghn = gh_n + b_hn;  r z n, h = gru_forward(xproj[t, b, d, ·], gh_r, gh_z, ghn, h_{s-1})
//   y[t, b, d*H+unit] = hbuf[s&1][d][b][unit] = h;  ws[d, t, b] = (r, z, n, ghn)
// ``xproj`` holds x W_ihᵀ + b_ih plus b_hr, b_hz; b_hn stays here because r multiplies it.
// Backward, s = n_steps-1 … 0:
//   rec[b, u] = dGh_{s+1}[b, :] · W_hh[d, :, unit]              (block GEMM, dGh from gbuf)
//   dh = dy[t, b] + (last ? dh_n[b] : rec + carry[b])
//   dGi = (dr, dz, dn), dGh = (dr, dz, dn r) = gru_backward(...);  carry[b] = dh z
// Ping-pong buffers as in lstm_persistent.cu.

#include "persistent_common.cuh"

using namespace prnn;

extern "C" __global__ void __launch_bounds__(THREADS, 1)
gru_persistent_fwd(const scalar_t* __restrict__ xproj,    // [T, B, D*3H]
                   const scalar_t* __restrict__ w_hh,     // [D, 3H, H]
                   const scalar_t* __restrict__ b_hn,     // [D, H] (read only if has_bhn)
                   scalar_t* hbuf,                        // [2, D, B, KP] h ping-pong, slot 1 = h0
                   scalar_t* y,                           // [T, B, D*H]
                   float* ws,                             // [D, T, B, 4H]: r z n ghn
                   const long long* __restrict__ lens,    // [B]
                   const int* __restrict__ n_active,      // [T]
                   int has_bhn, int n_steps, int T, int B, int H, int bhs, int kc) {
    typedef fwd_op_t op_t;
    const int j = blockIdx.x, d = blockIdx.y, D = gridDim.y;
    const Layout<op_t> L(H, 3 * bhs, kc, B);
    require_smem(L.bytes);
    PRNN_DYNAMIC_SMEM(smem);
    op_t* sw = reinterpret_cast<op_t*>(smem);
    op_t* sa = reinterpret_cast<op_t*>(smem + L.off_a);
    float* sacc = reinterpret_cast<float*>(smem + L.off_acc);

    load_w_forward(L, sw, w_hh + (long long)d * 3 * H * H, H, j, bhs);
    __syncthreads();

    for (int s = 0; s < n_steps; ++s) {
        const int n_act = n_active[s];
        const int mt = (n_act + TILE - 1) / TILE;
        auto x_row = [&](int b, int unit) {                          // xproj[t, b, d, unit]
            const long long t = row_time(d, s, lens[b]);
            return xproj + ((t * B + b) * D + d) * 3 * H + unit;
        };
        // This step's xproj into L2 while the GEMM runs (see lstm_persistent.cu).
        for_each_unit(n_act, bhs, j, H, [&](int b, int, int unit) {
            for (int g = 0; g < 3; ++g) prefetch_l2(x_row(b, unit) + (long long)g * H);
        });
        const scalar_t* h_prev = ping_pong(hbuf, (s + 1) & 1, D, d, B, L.kp);    // [B, KP]
        block_gemm(L, sw, sa, sacc, h_prev, n_act, mt);

        scalar_t* h_next = ping_pong(hbuf, s & 1, D, d, B, L.kp);
        for_each_unit(n_act, bhs, j, H, [&](int b, int u, int unit) {
            const long long t = row_time(d, s, lens[b]);
            const scalar_t* xp = x_row(b, unit);
            const float gh_r = gemm_result(sacc, mt, L.npad, b, u);
            const float gh_z = gemm_result(sacc, mt, L.npad, b, bhs + u);
            float ghn = gemm_result(sacc, mt, L.npad, b, 2 * bhs + u);
            if (has_bhn) ghn += to_float(b_hn[(long long)d * H + unit]);
            // This block wrote h_{s-1}[b, unit] itself (or the host did: h0).
            const float hp = to_float(load_cg(h_prev + (long long)b * L.kp + unit));
            float r, z, n;
            const float h = gru_forward(to_float(xp[0]), to_float(xp[H]), to_float(xp[2 * H]),
                                        gh_r, gh_z, ghn, hp, r, z, n);
            const scalar_t hs = from_float(h);
            y[(t * B + b) * D * H + (long long)d * H + unit] = hs;
            h_next[(long long)b * L.kp + unit] = hs;
            float* w = ws + (((long long)d * T + t) * B + b) * 4 * H + unit;
            w[0] = r;
            w[H] = z;
            w[2 * H] = n;
            w[3 * H] = ghn;
        });
        grid_sync();
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
gru_persistent_bwd(const scalar_t* __restrict__ dy,       // [T, B, D*H]
                   const scalar_t* __restrict__ dh_n,     // [D, B, H]
                   const scalar_t* __restrict__ w_hh,     // [D, 3H, H]
                   const float* __restrict__ ws,          // [D, T, B, 4H] from the forward
                   const scalar_t* __restrict__ y,        // [T, B, D*H] from the forward
                   const scalar_t* __restrict__ h0,       // [D, B, H]
                   float* dgi,                            // [D, T, B, 3H] out: seen by W_ih
                   float* dgh,                            // [D, T, B, 3H] out: seen by W_hh
                   float* carry,                          // [D, B, H] direct path, zero on entry
                   scalar_t* gbuf_lo,                     // [2, D, B, KP] dGh ping-pong (bf16)
                   float* gbuf_f32,                       // [2, D, B, KP] dGh (fp32, fp16)
                   const long long* __restrict__ lens,    // [B]
                   const int* __restrict__ n_active,      // [T]
                   int n_steps, int T, int B, int H, int bhs, int kc) {
    typedef bwd_op_t op_t;
    const int j = blockIdx.x, d = blockIdx.y, D = gridDim.y;
    const Layout<op_t> L(3 * H, bhs, kc, B);
    require_smem(L.bytes);
    PRNN_DYNAMIC_SMEM(smem);
    op_t* sw = reinterpret_cast<op_t*>(smem);
    op_t* sa = reinterpret_cast<op_t*>(smem + L.off_a);
    float* sacc = reinterpret_cast<float*>(smem + L.off_acc);
    op_t* gbuf = operand_buffer<op_t>(gbuf_lo, gbuf_f32);

    load_w_backward(L, sw, w_hh + (long long)d * 3 * H * H, H, 3 * H, j, bhs);
    __syncthreads();

    for (int s = n_steps - 1; s >= 0; --s) {
        const int n_act = n_active[s];
        const int n_next = s + 1 < n_steps ? n_active[s + 1] : 0;
        const int mt = (n_next + TILE - 1) / TILE;
        auto ws_row = [&](int b, int unit, long long t) {            // ws[d, t, b, unit]
            return ws + (((long long)d * T + t) * B + b) * 4 * H + unit;
        };
        auto y_at = [&](int b, int unit, long long t) {              // y[t, b, d*H + unit]
            return y + (t * B + b) * D * H + (long long)d * H + unit;
        };
        const auto t_prev_of = [&](long long t) { return d == 0 ? t - 1 : t + 1; };
        // dy, the saved gates and h_prev into L2 while the GEMM runs (see lstm_persistent.cu).
        for_each_unit(n_act, bhs, j, H, [&](int b, int, int unit) {
            const long long t = row_time(d, s, lens[b]);
            prefetch_l2(dy + (t * B + b) * D * H + (long long)d * H + unit);
            for (int k = 0; k < 4; ++k) prefetch_l2(ws_row(b, unit, t) + (long long)k * H);
            if (s > 0) prefetch_l2(y_at(b, unit, t_prev_of(t)));
        });
        if (mt > 0)
            block_gemm(L, sw, sa, sacc, ping_pong(gbuf, (s + 1) & 1, D, d, B, L.kp), n_next, mt);

        op_t* g_next = ping_pong(gbuf, s & 1, D, d, B, L.kp);
        for_each_unit(n_act, bhs, j, H, [&](int b, int u, int unit) {
            const long long t = row_time(d, s, lens[b]);
            const bool last = b >= n_next;
            const long long o_state = ((long long)d * B + b) * H + unit;
            const float rec = last ? to_float(dh_n[o_state])
                                   : gemm_result(sacc, mt, L.npad, b, u) + carry[o_state];
            const float dh = to_float(dy[(t * B + b) * D * H + (long long)d * H + unit]) + rec;
            const float* w = ws_row(b, unit, t);
            const float hp = to_float(s == 0 ? h0[o_state] : *y_at(b, unit, t_prev_of(t)));
            const float r = w[0];
            float dr, dz, dn, direct;
            gru_backward(dh, r, w[H], w[2 * H], w[3 * H], hp, dr, dz, dn, direct);
            carry[o_state] = direct;
            const long long o_g = (((long long)d * T + t) * B + b) * 3 * H + unit;
            dgi[o_g] = dr;
            dgi[o_g + H] = dz;
            dgi[o_g + 2 * H] = dn;
            dgh[o_g] = dr;
            dgh[o_g + H] = dz;
            dgh[o_g + 2 * H] = dn * r;
            op_t* gn = g_next + (long long)b * L.kp + unit;
            gn[0] = from_float_as<op_t>(dr);
            gn[H] = from_float_as<op_t>(dz);
            gn[2 * H] = from_float_as<op_t>(dn * r);
        });
        grid_sync();
    }
}
