// The cupy-persistent family's shared machinery: operand types, shared-memory layout, staging,
// the per-step block GEMM (tensor cores for fp16/bf16, FMA for fp32) and the grid barrier.
// The per-cell kernels (lstm_persistent.cu, gru_persistent.cu, rnn_persistent.cu) are a time
// loop around these pieces plus the cell's pointwise math from common.cuh.
//
// Dimension legend (every file of this family):
//   T    sequence length (padded)        B    batch (rows sorted by length, longest first)
//   D    directions (grid y)             s    processing step, 0 … n_steps-1
//   H    hidden units                    G    gates (LSTM 4, GRU 3, RNN 1)
//   NB   blocks per direction (grid x)   BHS  hidden units per block (block j owns units
//                                             j*BHS … j*BHS+BHS-1 of every gate)
//   K    reduction length of the block GEMM: H forward, G*H backward;  KP = K rounded up to 16
//   NW   W rows holding data: G*BHS forward, BHS backward;  NPAD = NW rounded up to 16
//   KC   K columns staged per chunk (multiple of 16; the host picks it, see persistent_launch)
//   BPAD B rounded up to 16;  MT = active rows / 16 rounded up (M tiles this step)
//
// The block GEMM of one step:  C[b, n] = Σ_k A[b, k] · W[n, k]   (b < MT*16, n < NPAD)
//   forward   A = h_{s-1} [B, H]     W[n = g*BHS+u, k] = W_hh[d, g*H + j*BHS+u, k]
//   backward  A = dG_{s+1} [B, G*H]  W[n = u, k]       = W_hh[d, k, j*BHS+u]
// W is loaded into shared memory once per launch; A is staged chunk by chunk (KC columns)
// from a ping-pong buffer in global memory that every block of the direction writes.
//
// Work split of the GEMM: 16x16 output tiles (MT × NPAD/16 of them) over the block's 8 warps;
// when there are fewer tiles than warps, the K steps of each tile are split KS ways
// (KS = 8 / tiles) and summed afterwards in a fixed order, so results are bitwise
// reproducible (no atomics anywhere in the arithmetic).
//
// Shared memory (dynamic, carved in this order, each region 128-byte aligned):
//   sW   [W_ROWS][WP]  op_t   W_ROWS = NPAD with tensor cores (zero rows), NW with FMA;
//                              WP = KP + 16 bytes of padding (shifts rows across banks)
//   sA   [BPAD][AP]    op_t   AP = KC + 16 bytes of padding
//   sAcc [max(8*256, BPAD*NPAD)] fp32   KS planes of [MT*16][NPAD] partial sums
// persistent_launch.Layout computes the same sizes (a CPU test compares), and the launcher
// checks before every launch that it passes exactly this carve (persistent_launch.kernel_smem);
// the kernels still trap if a launch gave them less.

#pragma once

#include "common.cuh"

#ifndef FUSEDRNN_HOST_EMULATION
// Without this, cooperative_groups.h includes libcu++ (<cuda/std/type_traits>, <cuda/atomic>),
// which NVRTC finds only where CCCL's include folder is on the path (CUDA 13 moved it to
// include/cccl); with it, only <nv/target> is needed besides the toolkit headers: a local
// toolkit has it in include/nv, and CuPy puts its bundled CCCL (which has it) on the path, so
// the pip wheels' headers suffice too (checked with NVRTC 13.0 and CuPy 14.2's include folders).
#define _CG_LIMIT_INCLUDED_DEPENDENCIES
#include <cooperative_groups.h>
#include <mma.h>
#endif

namespace prnn {

constexpr int WARPS = 8;                 // 256 threads: enough warps to split a 16-row GEMM's K
constexpr int THREADS = WARPS * 32;      // (the K split needs tiles < WARPS), untuned otherwise
constexpr int TILE = 16;                 // the wmma m16n16k16 tile

// ---------------------------------------------------------------------------------------------
// Operand types of the block GEMMs. fp16/bf16 forward: tensor cores on the model dtype. The
// backward's A operand is a gate gradient: bf16 keeps fp32's range, so it stays on tensor cores;
// rounded to fp16 it could underflow (< 6e-8) or overflow (> 65504 under a GradScaler), so fp16
// backward multiplies fp32 operands on the FMA units (the fp16 weights convert exactly). fp32
// models use fp32 FMA both ways (no TF32: see the backend docstring), IEEE except that CuPy
// compiles with -ftz=true, so denormal inputs and results are flushed to zero.
#if FUSEDRNN_DTYPE == 0
typedef float fwd_op_t;
typedef float bwd_op_t;
#elif FUSEDRNN_DTYPE == 1
typedef __half fwd_op_t;
typedef float bwd_op_t;
#else
typedef __nv_bfloat16 fwd_op_t;
typedef __nv_bfloat16 bwd_op_t;
#endif

template <typename T> struct uses_mma { static constexpr bool value = true; };
template <> struct uses_mma<float> { static constexpr bool value = false; };

__host__ __device__ __forceinline__ int round_up(int x, int m) { return (x + m - 1) / m * m; }
__host__ __device__ __forceinline__ long long align128(long long bytes) {
    return (bytes + 127) / 128 * 128;
}

// ---------------------------------------------------------------------------------------------
// Geometry and shared-memory carve of one block's GEMM (identical formulas in
// persistent_launch.Layout; a CPU test compares the two).

template <typename OpT>
struct Layout {
    int K, kp, nw, npad, w_rows, wp, kc, ap, bpad;
    long long off_a, off_acc, bytes;        // byte offsets of sA, sAcc; total bytes

    __host__ __device__ Layout(int K_, int nw_, int kc_, int B) {
        constexpr int pad = 16 / (int)sizeof(OpT);          // 16 bytes of row padding
        K = K_;
        kp = round_up(K, TILE);
        nw = nw_;
        npad = round_up(nw, TILE);
        w_rows = uses_mma<OpT>::value ? npad : nw;
        wp = kp + pad;
        kc = kc_;
        ap = kc + pad;
        bpad = round_up(B, TILE);
        off_a = align128((long long)w_rows * wp * (long long)sizeof(OpT));
        off_acc = off_a + align128((long long)bpad * ap * (long long)sizeof(OpT));
        long long acc = (long long)bpad * npad;
        if (acc < (long long)WARPS * TILE * TILE) acc = (long long)WARPS * TILE * TILE;
        bytes = off_acc + acc * 4;
    }
};

// ---------------------------------------------------------------------------------------------
// Device-side primitives; FUSEDRNN_HOST_EMULATION (tests/cuda_host_emulation.h) supplies
// host versions of the same names so the CPU tests can run these kernels.

#ifndef FUSEDRNN_HOST_EMULATION
#define PRNN_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#define PRNN_CHECK_ALIGNED(ptr, bytes) ((void)0)

__device__ __forceinline__ unsigned dynamic_smem_bytes() {
    unsigned n;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(n));
    return n;
}

__device__ __forceinline__ void grid_sync() { cooperative_groups::this_grid().sync(); }

__device__ __forceinline__ void prefetch_l2(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" : : "l"(p));
}
#endif

// The kernels refuse a launch whose dynamic shared memory is smaller than their carve. A trap
// ends the CUDA context, so the launcher checks the same number on the host first and this
// cannot fire through the backend; it stays as the last guard for any other caller, whose
// kernel would otherwise address shared memory past its allocation.
__device__ __forceinline__ void require_smem(long long bytes) {
    if ((long long)dynamic_smem_bytes() < bytes) __trap();
}

// Loads of data other blocks wrote during this launch go through L2 (.cg): an L1 line of this
// SM could hold the value from before the writer's store; grid_sync orders the stores.
template <typename T> __device__ __forceinline__ T load_cg(const T* p) { return __ldcg(p); }

// ---------------------------------------------------------------------------------------------
// Staging A: sA[r][0:cw] = src[r*src_pitch + c0 : c0+cw] for r < n_valid, zero for
// n_valid ≤ r < rows. src_pitch and c0 are multiples of 16 elements and cw one of 16, the
// source buffers are 16-byte aligned and zero past K (host-allocated with pitch KP), so every
// row copies as whole 16-byte vectors.
template <typename OpT>
__device__ __forceinline__ void stage_a(OpT* sa, int ap, const OpT* src, int src_pitch,
                                        int n_valid, int rows, int c0, int cw) {
    constexpr int V = 16 / (int)sizeof(OpT);               // elements per 16-byte vector
    const int vec_per_row = cw / V;
    for (int i = threadIdx.x; i < rows * vec_per_row; i += THREADS) {
        const int r = i / vec_per_row;
        const int c = (i - r * vec_per_row) * V;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (r < n_valid) {
            const OpT* p = src + (long long)r * src_pitch + c0 + c;
            PRNN_CHECK_ALIGNED(p, 16);
            v = load_cg(reinterpret_cast<const uint4*>(p));
        }
        OpT* q = sa + r * ap + c;
        PRNN_CHECK_ALIGNED(q, 16);
        *reinterpret_cast<uint4*>(q) = v;
    }
}

// ---------------------------------------------------------------------------------------------
// One output tile's K steps within a chunk: acc[16][16] (row pitch npad) += A[m0.., kk..] ·
// W[n0.., c0+kk..]ᵀ over kk = q*16, (q+ks)*16, … < cw. `first` starts from zero.

using namespace nvcuda;     // wmma (the host emulation provides its own nvcuda::wmma)

template <typename OpT>
__device__ __forceinline__ void tile_steps(const OpT* sa, int ap, const OpT* sw, int wp, int nw,
                                           float* acc, int npad, int m0, int n0, int c0, int cw,
                                           int q, int ks, bool first) {
    if constexpr (uses_mma<OpT>::value) {
        wmma::fragment<wmma::accumulator, TILE, TILE, TILE, float> c;
        if (first) wmma::fill_fragment(c, 0.0f);
        else wmma::load_matrix_sync(c, acc, npad, wmma::mem_row_major);
        wmma::fragment<wmma::matrix_a, TILE, TILE, TILE, OpT, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, TILE, TILE, TILE, OpT, wmma::col_major> b;
        for (int kk = q * TILE; kk < cw; kk += ks * TILE) {
            wmma::load_matrix_sync(a, sa + m0 * ap + kk, ap);
            // Element (k, n) of the col-major B operand is sW[n][k].
            wmma::load_matrix_sync(b, sw + (long long)n0 * wp + c0 + kk, wp);
            wmma::mma_sync(c, a, b, c);
        }
        wmma::store_matrix_sync(acc, c, npad, wmma::mem_row_major);
    } else {
        // fp32: lane l owns rows r, r+8 (r = l/4) and columns cg … cg+3 (cg = 4*(l%4)) of the
        // tile, 8 sums; 16-byte loads along k (6 loads per 32 FMAs). sW holds only nw rows.
        const int lane = threadIdx.x & 31;
        const int r = lane >> 2, cg = (lane & 3) * 4;
        float s[2][4];
        for (int i = 0; i < 2; ++i)
            for (int c = 0; c < 4; ++c)
                s[i][c] = first ? 0.0f : acc[(r + 8 * i) * npad + cg + c];
        const float* a0 = reinterpret_cast<const float*>(sa) + (m0 + r) * ap;
        const float* a1 = a0 + 8 * ap;
        const float* wrow[4];
        bool wok[4];
        for (int c = 0; c < 4; ++c) {
            wok[c] = n0 + cg + c < nw;
            const int n = wok[c] ? n0 + cg + c : 0;
            wrow[c] = reinterpret_cast<const float*>(sw) + (long long)n * wp + c0;
        }
        for (int kk = q * TILE; kk < cw; kk += ks * TILE) {
#pragma unroll
            for (int k4 = 0; k4 < TILE; k4 += 4) {
                PRNN_CHECK_ALIGNED(a0 + kk + k4, 16);
                const float4 x0 = *reinterpret_cast<const float4*>(a0 + kk + k4);
                const float4 x1 = *reinterpret_cast<const float4*>(a1 + kk + k4);
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    float4 w = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    if (wok[c]) {
                        PRNN_CHECK_ALIGNED(wrow[c] + kk + k4, 16);
                        w = *reinterpret_cast<const float4*>(wrow[c] + kk + k4);
                    }
                    s[0][c] = fmaf(x0.w, w.w, fmaf(x0.z, w.z, fmaf(x0.y, w.y, fmaf(x0.x, w.x,
                                                                                   s[0][c]))));
                    s[1][c] = fmaf(x1.w, w.w, fmaf(x1.z, w.z, fmaf(x1.y, w.y, fmaf(x1.x, w.x,
                                                                                   s[1][c]))));
                }
            }
        }
        for (int i = 0; i < 2; ++i)
            for (int c = 0; c < 4; ++c)
                acc[(r + 8 * i) * npad + cg + c] = s[i][c];
    }
}

// K split of this step: tiles = MT × NPAD/16 output tiles; KS ways when tiles < WARPS.
__device__ __forceinline__ int k_split(int mt, int npad) {
    const int tiles = mt * (npad / TILE);
    return tiles >= WARPS ? 1 : WARPS / tiles;
}

// The whole product of one step for the first mt*16 rows, A staged chunk by chunk:
// sAcc plane q (KS of them, [mt*16][npad] each) ends with the q-th partial sum.
// A row of `src` is one batch row (pitch kp); rows ≥ n_valid are taken as zero.
template <typename OpT>
__device__ __forceinline__ void block_gemm(const Layout<OpT>& L, OpT* sw, OpT* sa, float* sacc,
                                           const OpT* src, int n_valid, int mt) {
    const int nt = L.npad / TILE;
    const int ks = k_split(mt, L.npad);
    const int items = mt * nt * ks;
    const int plane = mt * TILE * L.npad;
    const int warp = threadIdx.x >> 5;
    for (int c0 = 0; c0 < L.kp; c0 += L.kc) {
        const int cw = L.kp - c0 < L.kc ? L.kp - c0 : L.kc;
        stage_a(sa, L.ap, src, L.kp, n_valid, mt * TILE, c0, cw);
        __syncthreads();
        for (int it = warp; it < items; it += WARPS) {
            const int tile = it % (mt * nt), q = it / (mt * nt);
            const int m0 = (tile / nt) * TILE, n0 = (tile % nt) * TILE;
            tile_steps<OpT>(sa, L.ap, sw, L.wp, L.nw, sacc + q * plane + m0 * L.npad + n0, L.npad,
                            m0, n0, c0, cw, q, ks, c0 == 0);
        }
        __syncthreads();
    }
}

// C[b, n] after block_gemm: the KS partial sums added in plane order (fixed, deterministic).
__device__ __forceinline__ float gemm_result(const float* sacc, int mt, int npad, int b, int n) {
    const int ks = k_split(mt, npad);
    const int plane = mt * TILE * npad;
    float v = sacc[b * npad + n];
    for (int q = 1; q < ks; ++q) v += sacc[q * plane + b * npad + n];
    return v;
}

// ---------------------------------------------------------------------------------------------
// W into shared memory, once per launch (zeros where NW, H or K end; padding columns past KP
// are never read).

// Forward: sW[n][k] = W_hh[d][g*H + unit][k], n = g*BHS + u, unit = j*BHS + u.
template <typename OpT>
__device__ __forceinline__ void load_w_forward(const Layout<OpT>& L, OpT* sw,
                                               const scalar_t* w_hh_d, int H, int j, int bhs) {
    for (int i = threadIdx.x; i < L.w_rows * L.kp; i += THREADS) {
        const int n = i / L.kp, k = i - n * L.kp;
        const int g = n / bhs, unit = j * bhs + (n - g * bhs);
        float v = 0.0f;
        if (n < L.nw && unit < H && k < H) v = to_float(w_hh_d[((long long)g * H + unit) * H + k]);
        sw[(long long)n * L.wp + k] = from_float_as<OpT>(v);
    }
}

// Backward: sW[u][k] = W_hh[d][k][unit], unit = j*BHS + u (the columns of W_hh this block needs).
template <typename OpT>
__device__ __forceinline__ void load_w_backward(const Layout<OpT>& L, OpT* sw,
                                                const scalar_t* w_hh_d, int H, int GH, int j,
                                                int bhs) {
    for (int i = threadIdx.x; i < L.w_rows * L.kp; i += THREADS) {
        const int k = i / L.w_rows, u = i - k * L.w_rows;
        const int unit = j * bhs + u;
        float v = 0.0f;
        if (u < L.nw && unit < H && k < GH) v = to_float(w_hh_d[(long long)k * H + unit]);
        sw[(long long)u * L.wp + k] = from_float_as<OpT>(v);
    }
}

// Rows [B, KP] of direction d in slot `slot` of a ping-pong buffer [2, D, B, KP].
template <typename T>
__device__ __forceinline__ T* ping_pong(T* buf, int slot, int D, int d, int B, int kp) {
    return buf + ((long long)slot * D + d) * B * kp;
}

// The backward's dG ping-pong buffer in the GEMM operand type: the kernels take both a
// scalar_t and an fp32 pointer (the launcher passes a placeholder for the unused one), because
// the loader checks pointer types against the torch dtypes and op_t is neither always.
template <typename OpT>
__device__ __forceinline__ OpT* operand_buffer(scalar_t* lo, float* f32) {
    if constexpr (uses_mma<OpT>::value) return reinterpret_cast<OpT*>(lo);
    else return reinterpret_cast<OpT*>(f32);
}

// f(b, u, unit) for every active row b < n_rows and every unit this block owns (u < BHS,
// unit = j*BHS + u < H), spread over the block's threads; consecutive threads take consecutive
// units, so global accesses along H coalesce. The prefetch pass and the pointwise pass of a step
// use the same split.
template <typename F>
__device__ __forceinline__ void for_each_unit(int n_rows, int bhs, int j, int H, F&& f) {
    for (int i = threadIdx.x; i < n_rows * bhs; i += THREADS) {
        const int b = i / bhs, u = i - b * bhs, unit = j * bhs + u;
        if (unit < H) f(b, u, unit);
    }
}

// Time of row b at step s: forward order in direction 0, from the row's own end in direction 1.
__device__ __forceinline__ long long row_time(int d, int s, long long len) {
    return d == 0 ? (long long)s : len - 1 - s;
}

}  // namespace prnn
