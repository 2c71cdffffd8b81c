// Grouped GEMMs of the prefill on int8 tensor cores (mma.sync m16n8k32), for the MoE experts
// (MXFP4, planar) and the dense Q8 matrices (split int8 + f32 scales), with biases (and for
// the experts' gate/up pair, SwiGLU) fused into the epilogue.
//
//   y[s, n] = sum_k x[row(s), k] * W[e(s), n, k] + bias[e(s), n]           (pg_mx, pg_q8)
//   y[s, n] = swiglu(gate[s, n], up[s, n])   (both as above)               (pg_mx_swiglu)
//
// Slots s are grouped by expert: the host lists tiles (expert, first slot, group end) of at
// most PG_BM slots, all in one group; `row(s)` reads row `row_map[s]` of x (a token's row for
// gate/up) or row s when `row_map` is null. Output rows are slots, in the order listed.
//
// Inputs are quantized per 32-block into two int8 planes, x ~= d * (128 * hi + lo), by
// decode.cu's `dec_quant` (permuted within each block for MXFP4 weights, natural for Q8), so
// each 32-wide k-block is two exact int8 MMAs (hi and lo) whose int32 results are combined as
// 128 * hi + lo and scaled by d_x(row, block) * d_w(col, block) into f32 accumulators: the
// same numbers as the decode kernels' dp4a dot products, in another summation order.
//
// MXFP4 weights stay 4-bit in shared memory; a B fragment's four k positions (tig*4 .. +3) of
// the permuted order are one 16-bit half of the block's nibble bytes (mx_lut4).
//
// Tiles: PG_BM slots x PG_BN columns (per matrix) per block of 8 warps (2 x 4, 32 x 16 each),
// k in stages of PG_BK = 2 blocks, double-buffered with cp.async. k % 32 == 0, n % 2 == 0.
#include <stdint.h>
#include "mxfp4.cuh"

#define PG_BM 64
#define PG_BN 64
#define PG_BK 64
#define PG_THREADS 256
#define PG_KB (PG_BK / 32)
#define PG_AS (PG_BK + 16)  // bytes per row of an activation plane tile (bank-conflict padding)
// 1.5 * 2^23 as float bits and value. One 32-wide block's int8 product is below 2^22 in
// magnitude for both planes (32 * 127 * 127 for Q8 weights).
#define PG_MAGIC 0x4B400000
#define PG_MAGIC_F 12582912.f

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    const int n = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled, nothing is read
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// c += a (16x32 s8, row) * b (32x8 s8, col), s32 accumulators.
__device__ __forceinline__ void mma_s8(int c[4], const int a[4], int b0, int b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float pg_swiglu(float g, float u, float alpha, float limit) {
    g = g > limit ? limit : g;
    u = u > limit ? limit : (u < -limit ? -limit : u);
    return g / (1.f + expf(-alpha * g)) * (u + 1.f);
}

// MX: planar MXFP4 weights (wq u8 (e, n, k/2), ws u8 exponents (e, n, k/32)); else Q8 split
// (wq int8 (e, n, k), ws f32 (e, n, k/32)). MATS = 2: (w0, w1) are gate and up, fused by SwiGLU.
template <bool MX, int MATS>
__device__ __forceinline__ void pg_gemm(const int8_t *__restrict__ xh, const int8_t *__restrict__ xl,
                                        const float *__restrict__ xd, const uint32_t *__restrict__ row_map,
                                        const uint32_t *__restrict__ tiles, const uint8_t *__restrict__ w0,
                                        const void *__restrict__ s0, const uint8_t *__restrict__ w1,
                                        const void *__restrict__ s1, const float *__restrict__ b0,
                                        const float *__restrict__ b1, float *__restrict__ y,
                                        const uint32_t n, const uint32_t k, const float alpha,
                                        const float limit) {
    constexpr int WROW = MX ? PG_BK / 2 : PG_BK;  // weight bytes of one row per stage
    constexpr int WS = WROW + 16;                 // padded smem row stride
    constexpr int WR = MATS * PG_BN;              // weight rows per stage
    __shared__ __align__(16) int8_t sa[2][2][PG_BM * PG_AS];  // [stage][hi/lo]
    __shared__ __align__(16) uint8_t sw[2][WR * WS];
    __shared__ float sxd[2][PG_BM * PG_KB];
    __shared__ float swd[2][WR * PG_KB];

    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t g = lane >> 2, tig = lane & 3;
    const uint32_t e = tiles[3 * blockIdx.y], m0 = tiles[3 * blockIdx.y + 1];
    const uint32_t rows = min((uint32_t)PG_BM, tiles[3 * blockIdx.y + 2] - m0);
    const uint32_t n0 = blockIdx.x * PG_BN;
    const uint32_t nkb = k / 32, kq = MX ? k / 2 : k;
    const uint32_t nstage = (k + PG_BK - 1) / PG_BK;

    // This thread's activation chunk: row tid/4, 16-byte part tid%4 of both planes.
    const uint32_t a_row = tid >> 2, a_part = tid & 3;
    const bool a_ok = a_row < rows;
    const uint64_t a_src = a_ok ? (uint64_t)(row_map ? row_map[m0 + a_row] : m0 + a_row) : 0;
    // Its x-scale slot (threads < PG_BM * PG_KB): row tid/2, block tid%2 of the stage.
    const uint32_t xs_row = tid >> 1, xs_j = tid & 1;
    const bool xs_ok = tid < PG_BM * PG_KB && xs_row < rows;
    const uint64_t xs_src = xs_ok ? (uint64_t)(row_map ? row_map[m0 + xs_row] : m0 + xs_row) : 0;
    // Its weight chunk: MX rows of 32 bytes (2 parts), Q8 rows of 64 bytes (4 parts).
    constexpr int WPARTS = WROW / 16;
    const uint32_t w_row = tid / WPARTS, w_part = tid % WPARTS;
    const uint32_t w_mat = w_row / PG_BN, w_n = n0 + w_row % PG_BN;
    const bool w_ok = w_row < WR && w_n < n;
    const uint8_t *w_base = (MATS == 2 && w_mat ? w1 : w0) + ((uint64_t)e * n + (w_ok ? w_n : 0)) * kq;
    // Its weight-scale slot (threads < WR * PG_KB): row tid/2, block tid%2.
    const uint32_t ws_row = tid >> 1, ws_j = tid & 1;
    const uint32_t ws_mat = ws_row / PG_BN, ws_n = n0 + ws_row % PG_BN;
    const bool ws_ok = tid < WR * PG_KB && ws_n < n;
    const void *ws_base = MATS == 2 && ws_mat ? s1 : s0;
    const uint64_t ws_at = ((uint64_t)e * n + (ws_ok ? ws_n : 0)) * nkb;

    auto load = [&](uint32_t st, uint32_t buf) {
        const uint32_t k0 = st * PG_BK;
        const bool ak = a_ok && k0 + a_part * 16 < k;
        const uint64_t ao = a_src * k + k0 + a_part * 16;
        cp_async16(&sa[buf][0][a_row * PG_AS + a_part * 16], ak ? (const void *)(xh + ao) : xh, ak);
        cp_async16(&sa[buf][1][a_row * PG_AS + a_part * 16], ak ? (const void *)(xl + ao) : xl, ak);
        if (tid < WR * WPARTS) {
            const uint32_t kk = MX ? k0 / 2 + w_part * 16 : k0 + w_part * 16;
            const bool wk = w_ok && kk < kq;
            cp_async16(&sw[buf][w_row * WS + w_part * 16], wk ? (const void *)(w_base + kk) : w0, wk);
        }
        const uint32_t kb = k0 / 32;
        if (tid < PG_BM * PG_KB)
            sxd[buf][tid] = xs_ok && kb + xs_j < nkb ? xd[xs_src * nkb + kb + xs_j] : 0.f;
        if (tid < WR * PG_KB) {
            float v = 0.f;
            if (ws_ok && kb + ws_j < nkb) {
                if (MX)
                    v = mxfp4_scale(((const uint8_t *)ws_base)[ws_at + kb + ws_j]);
                else
                    v = ((const float *)ws_base)[ws_at + kb + ws_j];
            }
            swd[buf][tid] = v;
        }
    };

    const uint32_t wm = (warp >> 2) * 32, wn = (warp & 3) * 16;
    float acc[MATS][2][2][4];
#pragma unroll
    for (int a = 0; a < MATS; a++)
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int c = 0; c < 4; c++) acc[a][i][j][c] = 0.f;

    load(0, 0);
    cp_async_commit();
    for (uint32_t st = 0; st < nstage; st++) {
        const uint32_t buf = st & 1;
        if (st + 1 < nstage) load(st + 1, buf ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
#pragma unroll
        for (int kb = 0; kb < PG_KB; kb++) {
            if (st * PG_BK + kb * 32 >= k) break;
            int ah[2][4], al[2][4];
            float xs[2][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                const uint32_t r0 = wm + mi * 16 + g;
                const int8_t *ph = &sa[buf][0][r0 * PG_AS + kb * 32 + tig * 4];
                const int8_t *pl = &sa[buf][1][r0 * PG_AS + kb * 32 + tig * 4];
                ah[mi][0] = *(const int *)ph;
                ah[mi][1] = *(const int *)(ph + 8 * PG_AS);
                ah[mi][2] = *(const int *)(ph + 16);
                ah[mi][3] = *(const int *)(ph + 8 * PG_AS + 16);
                al[mi][0] = *(const int *)pl;
                al[mi][1] = *(const int *)(pl + 8 * PG_AS);
                al[mi][2] = *(const int *)(pl + 16);
                al[mi][3] = *(const int *)(pl + 8 * PG_AS + 16);
                xs[mi][0] = sxd[buf][r0 * PG_KB + kb];
                xs[mi][1] = sxd[buf][(r0 + 8) * PG_KB + kb];
            }
#pragma unroll
            for (int mat = 0; mat < MATS; mat++) {
#pragma unroll
                for (int ni = 0; ni < 2; ni++) {
                    const uint32_t wrow = mat * PG_BN + wn + ni * 8 + g;
                    int bf0, bf1;
                    if (MX) {
                        const uint8_t *pw = &sw[buf][wrow * WS + kb * 16 + 4 * (tig >> 1)];
                        const uint32_t sh = 16 * (tig & 1);
                        bf0 = mx_lut4(*(const uint32_t *)pw >> sh);
                        bf1 = mx_lut4(*(const uint32_t *)(pw + 8) >> sh);
                    } else {
                        const uint8_t *pw = &sw[buf][wrow * WS + kb * 32 + tig * 4];
                        bf0 = *(const int *)pw;
                        bf1 = *(const int *)(pw + 16);
                    }
                    const uint32_t cc = mat * PG_BN + wn + ni * 8 + tig * 2;
                    const float w0s = swd[buf][cc * PG_KB + kb], w1s = swd[buf][(cc + 1) * PG_KB + kb];
#pragma unroll
                    for (int mi = 0; mi < 2; mi++) {
                        // Accumulators start at PG_MAGIC, so each int32 result r (|r| < 2^22)
                        // reads as the float 1.5 * 2^23 + r: converted without I2F (a quarter-
                        // rate instruction that would bound this loop).
                        int ch[4] = {PG_MAGIC, PG_MAGIC, PG_MAGIC, PG_MAGIC};
                        int cl[4] = {PG_MAGIC, PG_MAGIC, PG_MAGIC, PG_MAGIC};
                        mma_s8(ch, ah[mi], bf0, bf1);
                        mma_s8(cl, al[mi], bf0, bf1);
#pragma unroll
                        for (int c = 0; c < 4; c++) {
                            const float sc = xs[mi][c >> 1] * ((c & 1) ? w1s : w0s);
                            const float fh = __int_as_float(ch[c]) - PG_MAGIC_F;
                            const float fl = __int_as_float(cl[c]) - PG_MAGIC_F;
                            acc[mat][mi][ni][c] += fmaf(fh, 128.f, fl) * sc;
                        }
                    }
                }
            }
        }
        __syncthreads();
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mi = 0; mi < 2; mi++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const uint32_t row = wm + mi * 16 + g + 8 * h;
            if (row >= rows) continue;
            float *yr = y + (uint64_t)(m0 + row) * n;
#pragma unroll
            for (int ni = 0; ni < 2; ni++) {
                const uint32_t col = n0 + wn + ni * 8 + tig * 2;
                if (col >= n) continue;
                const uint64_t bo = (uint64_t)e * n + col;
                float v0 = acc[0][mi][ni][2 * h] + b0[bo];
                float v1 = acc[0][mi][ni][2 * h + 1] + b0[bo + 1];
                if (MATS == 2) {
                    v0 = pg_swiglu(v0, acc[MATS - 1][mi][ni][2 * h] + b1[bo], alpha, limit);
                    v1 = pg_swiglu(v1, acc[MATS - 1][mi][ni][2 * h + 1] + b1[bo + 1], alpha, limit);
                }
                *(float2 *)(yr + col) = make_float2(v0, v1);
            }
        }
    }
}

#define PG_ARGS                                                                                     \
    const int8_t *__restrict__ xh, const int8_t *__restrict__ xl, const float *__restrict__ xd,     \
        const uint32_t *__restrict__ row_map, const uint32_t *__restrict__ tiles,                   \
        const uint8_t *__restrict__ w0, const void *__restrict__ s0, const uint8_t *__restrict__ w1, \
        const void *__restrict__ s1, const float *__restrict__ b0, const float *__restrict__ b1,    \
        float *__restrict__ y, const uint32_t n, const uint32_t k, const float alpha, const float limit
#define PG_PASS xh, xl, xd, row_map, tiles, w0, s0, w1, s1, b0, b1, y, n, k, alpha, limit

// Grid (ceil(n / PG_BN), tiles), PG_THREADS threads. w1, s1, b1, alpha, limit unused.
extern "C" __global__ void __launch_bounds__(PG_THREADS) pg_mx(PG_ARGS) { pg_gemm<true, 1>(PG_PASS); }
// Gate (w0, s0, b0) and up (w1, s1, b1) through SwiGLU(alpha, limit).
extern "C" __global__ void __launch_bounds__(PG_THREADS) pg_mx_swiglu(PG_ARGS) { pg_gemm<true, 2>(PG_PASS); }
extern "C" __global__ void __launch_bounds__(PG_THREADS) pg_q8(PG_ARGS) { pg_gemm<false, 1>(PG_PASS); }

// out[t, j] = sum_c w[t, c] * y[at[t * top_k + c], j]: the routing-weighted sum of each token's
// expert outputs (y rows in expert order, `at` the row of each (token, choice)), summed in
// choice order. Grid (ceil(d / 256), t), 256 threads.
extern "C" __global__ void pg_combine(const float *__restrict__ y, const uint32_t *__restrict__ at,
                                      const float *__restrict__ w, float *__restrict__ out,
                                      const uint32_t top_k, const uint32_t d) {
    const uint32_t t = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    float s = 0.f;
    for (uint32_t c = 0; c < top_k; c++) {
        const uint64_t row = at[(uint64_t)t * top_k + c];
        s = fmaf(w[(uint64_t)t * top_k + c], y[row * d + j], s);
    }
    out[(uint64_t)t * d + j] = s;
}
