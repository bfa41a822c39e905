// Host emulation of the CUDA features the cupy-persistent kernels use, so the CPU tests can
// compile kernels/cuda/<cell>_persistent.cu with g++ and run them on CPU tensors
// (tests/test_cupy_persistent_cpu.py). One OS thread per CUDA thread; __syncthreads and the
// grid barrier are real barriers, so a missing barrier shows up as a race, not as luck.
//
// Emulated: threadIdx/blockIdx/blockDim/gridDim, __syncthreads, prnn::grid_sync,
// prnn::prefetch_l2 (a no-op), dynamic shared memory (poisoned with 0xFF bytes: NaN for every
// float type, so a read of an unwritten element poisons the result), __ldcg, __trap, and
// nvcuda::wmma for m16n16k16 (each lane holds the whole tile; lane 0 stores). Checked: wmma
// pointer alignment (32 bytes) and ldm, 16-byte alignment of vector accesses
// (PRNN_CHECK_ALIGNED), shared-memory bounds of wmma accesses, and that the launch's dynamic
// shared memory covers the kernel's carve (require_smem).
// Not emulated: the memory model (L1 staleness, fences), bank conflicts, timing.

#pragma once

#define FUSEDRNN_HOST_EMULATION 1

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <vector_types.h>
#include <vector_functions.h>

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __launch_bounds__(...)

namespace emu {

[[noreturn]] inline void fail(const char* what, const char* file, int line) {
    std::fprintf(stderr, "cuda_host_emulation: %s (%s:%d)\n", what, file, line);
    std::fflush(stderr);
    std::abort();
}

#define EMU_CHECK(cond, what) ((cond) ? (void)0 : ::emu::fail(what, __FILE__, __LINE__))

class Barrier {
public:
    explicit Barrier(int n) : n_(n) {}
    void wait() {
        std::unique_lock<std::mutex> lock(m_);
        const long gen = gen_;
        if (++count_ == n_) {
            count_ = 0;
            ++gen_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return gen_ != gen; });
        }
    }
private:
    std::mutex m_;
    std::condition_variable cv_;
    int n_, count_ = 0;
    long gen_ = 0;
};

struct BlockState {
    unsigned char* smem;
    size_t smem_bytes;
    Barrier* barrier;
};

inline thread_local uint3 tls_thread{0, 0, 0};
inline thread_local uint3 tls_block{0, 0, 0};
inline thread_local dim3 tls_block_dim;
inline thread_local dim3 tls_grid_dim;
inline thread_local BlockState* tls_state = nullptr;
inline thread_local Barrier* tls_grid = nullptr;

inline void check_smem_range(const void* p, size_t bytes) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    const BlockState* s = tls_state;
    if (c >= s->smem && c < s->smem + s->smem_bytes)
        EMU_CHECK(c + bytes <= s->smem + s->smem_bytes, "shared-memory access past the allocation");
}

template <typename... Args, size_t... I>
std::tuple<Args...> unpack(void** params, std::index_sequence<I...>) {
    return std::tuple<Args...>(*static_cast<std::remove_reference_t<Args>*>(params[I])...);
}

// Runs kernel(args...) on grid × block OS threads (grid.z = block.y = block.z = 1 here).
template <typename... Args>
void launch(void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem_bytes, void** params) {
    const std::tuple<Args...> args = unpack<Args...>(params, std::index_sequence_for<Args...>{});
    const int n_blocks = grid.x * grid.y, n_threads = block.x;
    Barrier grid_barrier(n_blocks * n_threads);
    std::vector<BlockState> states(n_blocks);
    std::vector<Barrier*> barriers;
    std::vector<void*> buffers;
    for (int b = 0; b < n_blocks; ++b) {
        void* mem = std::aligned_alloc(128, (smem_bytes + 127) / 128 * 128 + 128);
        std::memset(mem, 0xFF, smem_bytes);
        buffers.push_back(mem);
        barriers.push_back(new Barrier(n_threads));
        states[b] = BlockState{static_cast<unsigned char*>(mem), smem_bytes, barriers.back()};
    }
    std::vector<std::thread> threads;
    threads.reserve(n_blocks * n_threads);
    for (int by = 0; by < (int)grid.y; ++by)
        for (int bx = 0; bx < (int)grid.x; ++bx)
            for (int t = 0; t < n_threads; ++t)
                threads.emplace_back([&, bx, by, t] {
                    tls_thread = make_uint3(t, 0, 0);
                    tls_block = make_uint3(bx, by, 0);
                    tls_block_dim = block;
                    tls_grid_dim = grid;
                    tls_state = &states[by * grid.x + bx];
                    tls_grid = &grid_barrier;
                    std::apply(kernel, args);
                });
    for (auto& th : threads) th.join();
    for (auto* b : barriers) delete b;
    for (void* m : buffers) std::free(m);
}

}  // namespace emu

#define threadIdx (::emu::tls_thread)
#define blockIdx (::emu::tls_block)
#define blockDim (::emu::tls_block_dim)
#define gridDim (::emu::tls_grid_dim)

inline void __syncthreads() { ::emu::tls_state->barrier->wait(); }
[[noreturn]] inline void __trap() { ::emu::fail("__trap()", __FILE__, __LINE__); }

template <typename T> inline T __ldcg(const T* p) { return *p; }

#define PRNN_DYNAMIC_SMEM(name) unsigned char* name = ::emu::tls_state->smem
#define PRNN_CHECK_ALIGNED(ptr, bytes) \
    EMU_CHECK(reinterpret_cast<std::uintptr_t>(ptr) % (bytes) == 0, "misaligned vector access")

namespace prnn {
inline unsigned dynamic_smem_bytes() { return (unsigned)::emu::tls_state->smem_bytes; }
inline void grid_sync() { ::emu::tls_grid->wait(); }
inline void prefetch_l2(const void*) {}
}  // namespace prnn

// ---------------------------------------------------------------------------------------------
// nvcuda::wmma, m16n16k16 only: the documented element placement of each layout.

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulation covers m16n16k16 only");
    float x[256];       // [row][col] of the tile (A: m×k, B: k×n, C: m×n)
};

inline float emu_to_float(float v) { return v; }
inline float emu_to_float(__half v) { return __half2float(v); }
inline float emu_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
inline void check_operand(const T* p, unsigned ldm, size_t extent_elems) {
    EMU_CHECK(reinterpret_cast<std::uintptr_t>(p) % 32 == 0, "wmma pointer not 32-byte aligned");
    EMU_CHECK((ldm * sizeof(T)) % 16 == 0, "wmma ldm not a multiple of 16 bytes");
    ::emu::check_smem_range(p, extent_elems * sizeof(T));
}

template <typename Use, typename T, typename L>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, float v) {
    for (float& e : f.x) e = v;
}

template <typename T>
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, row_major>& f, const T* p,
                             unsigned ldm) {
    check_operand(p, ldm, 15 * ldm + 16);
    for (int i = 0; i < 16; ++i)
        for (int k = 0; k < 16; ++k) f.x[i * 16 + k] = emu_to_float(p[i * ldm + k]);
}

template <typename T>
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, col_major>& f, const T* p,
                             unsigned ldm) {
    check_operand(p, ldm, 15 * ldm + 16);
    for (int k = 0; k < 16; ++k)
        for (int n = 0; n < 16; ++n) f.x[k * 16 + n] = emu_to_float(p[k + n * ldm]);
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p,
                             unsigned ldm, layout_t layout) {
    EMU_CHECK(layout == mem_row_major, "emulation covers row-major accumulators");
    check_operand(p, ldm, 15 * ldm + 16);
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) f.x[i * 16 + j] = p[i * ldm + j];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout) {
    EMU_CHECK(layout == mem_row_major, "emulation covers row-major accumulators");
    check_operand(p, ldm, 15 * ldm + 16);
    if ((threadIdx.x & 31) != 0) return;           // one lane writes the (identical) tile
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) p[i * ldm + j] = f.x[i * 16 + j];
}

template <typename T>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, T, row_major>& a,
                     const fragment<matrix_b, 16, 16, 16, T, col_major>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
    float out[256];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) {
            float s = c.x[i * 16 + j];
            for (int k = 0; k < 16; ++k) s += a.x[i * 16 + k] * b.x[k * 16 + j];
            out[i * 16 + j] = s;
        }
    std::memcpy(d.x, out, sizeof(out));
}

}  // namespace wmma
}  // namespace nvcuda
