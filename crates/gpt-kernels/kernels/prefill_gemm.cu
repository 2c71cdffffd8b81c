// Grouped GEMMs of the prefill on tensor cores, with biases (and for the MoE experts' gate/up
// pair, SwiGLU) fused into the epilogue:
//
//   y[s, n] = sum_k x[row(s), k] * W[e(s), n, k] + bias[e(s), n]          (pg_q8, pg_mxb)
//   y[s, n] = swiglu(gate[s, n], up[s, n])   (both as above)              (pg_mxb_swiglu)
//
// Slots s are grouped by expert: a plan (built on the host, or on the device by pg_route) lists
// tiles (expert, first slot, group end) of at most PG_BM slots, all in one group; `row(s)` reads row `row_map[s]` of x (a token's row for
// gate/up) or row s when `row_map` is null. Output rows are slots, in the order listed.
//
// Two kernels, one per weight format:
// - pg_q8 / pg_q8w2, dense Q8 split matrices (int8 qs + f32 scale per 32-block; pg_q8w2 with
//   a second, low int8 plane: 15-bit weights) on int8 MMAs
//   (mma.sync m16n8k32): inputs are quantized per 32-block into two int8 planes,
//   x ~= d * (128 * hi + lo), by decode.cu's `dec_quant` (natural order), so each 32-wide
//   k-block is two exact int8 MMAs whose results are combined as 128 * hi + lo and scaled by
//   d_x(row, block) * d_w(col, block) into f32 accumulators (the decode kernels' numbers in
//   another summation order).
// - pg_mxb / pg_mxb_swiglu, planar MXFP4 experts on bf16 MMAs (below).
//
// pg_q8 tiles: PG_BM slots x PG_BN columns per block of 8 warps (2 x 4, 32 x 16 each), k in
// double-buffered stages (cp.async); the bf16 kernels' tiles are described below.
// k % 32 == 0, n % 2 == 0.
#include <stdint.h>
#include "mma.cuh"
#include "mxfp4.cuh"
#include "swiglu.cuh"

#define PG_BM 64
#define PG_BN 64
#define PG_BK 64
#define PG_THREADS 256
#define PG_KB (PG_BK / 32)
#define PG_AS (PG_BK + 16)  // bytes per row of an int8 tile (bank-conflict padding)
// One 32-wide block's int8 product is below 2^22 in magnitude for both planes (32 * 127 * 127),
// so the accumulators convert through mma.cuh's MM_MAGIC.

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

// Q8 split weights (wq int8 (e, n, k), ws f32 (e, n, k/32); with W2 a low plane wl int8
// (e, n, k) too: weight = ws * (128 * wq + wl)) against int8 planes xh, xl (rows, k) with scales
// xd (rows, k/32). Grid (ceil(n / PG_BN), tiles), PG_THREADS threads.
template <bool W2>
__device__ __forceinline__ void pg_q8_body(
    const int8_t *__restrict__ xh, const int8_t *__restrict__ xl, const float *__restrict__ xd,
    const uint32_t *__restrict__ row_map, const uint32_t *__restrict__ tiles,
    const int8_t *__restrict__ wq, const int8_t *__restrict__ wl, const float *__restrict__ ws,
    const float *__restrict__ bias, float *__restrict__ y, const uint32_t n, const uint32_t k) {
    __shared__ __align__(16) int8_t sa[2][2][PG_BM * PG_AS];  // [stage][hi/lo]
    __shared__ __align__(16) int8_t sw[2][W2 ? 2 : 1][PG_BN * PG_AS];  // [stage][hi/lo]
    __shared__ float sxd[2][PG_BM * PG_KB];
    __shared__ float swd[2][PG_BN * PG_KB];

    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t g = lane >> 2, tig = lane & 3;
    const uint32_t e = tiles[3 * blockIdx.y], m0 = tiles[3 * blockIdx.y + 1];
    const uint32_t rows = min((uint32_t)PG_BM, tiles[3 * blockIdx.y + 2] - m0);
    const uint32_t n0 = blockIdx.x * PG_BN;
    const uint32_t nkb = k / 32;
    const uint32_t nstage = (k + PG_BK - 1) / PG_BK;

    // This thread's activation chunk: row tid/4, 16-byte part tid%4 of both planes; and its
    // weight chunk: row tid/4, part tid%4.
    const uint32_t c_row = tid >> 2, c_part = tid & 3;
    const bool a_ok = c_row < rows;
    const uint64_t a_src = a_ok ? (uint64_t)(row_map ? row_map[m0 + c_row] : m0 + c_row) : 0;
    const uint32_t w_n = n0 + c_row;
    const bool w_ok = w_n < n;
    const uint64_t w_at = ((uint64_t)e * n + (w_ok ? w_n : 0)) * k;
    // Its scale slots (threads < 128): row tid/2, block tid%2 of the stage, for x and for W.
    const uint32_t s_row = tid >> 1, s_j = tid & 1;
    const bool xs_ok = tid < PG_BM * PG_KB && s_row < rows;
    const uint64_t xs_src = xs_ok ? (uint64_t)(row_map ? row_map[m0 + s_row] : m0 + s_row) : 0;
    const bool ws_ok = tid < PG_BN * PG_KB && n0 + s_row < n;
    const uint64_t ws_at = ((uint64_t)e * n + (ws_ok ? n0 + s_row : 0)) * nkb;

    auto load = [&](uint32_t st, uint32_t buf) {
        const uint32_t k0 = st * PG_BK, kk = k0 + c_part * 16;
        const bool ak = a_ok && kk < k, wk = w_ok && kk < k;
        const uint64_t ao = a_src * k + kk;
        cp_async16(&sa[buf][0][c_row * PG_AS + c_part * 16], ak ? (const void *)(xh + ao) : xh, ak);
        cp_async16(&sa[buf][1][c_row * PG_AS + c_part * 16], ak ? (const void *)(xl + ao) : xl, ak);
        cp_async16(&sw[buf][0][c_row * PG_AS + c_part * 16], wk ? (const void *)(wq + w_at + kk) : wq, wk);
        if (W2) {
            cp_async16(&sw[buf][W2 ? 1 : 0][c_row * PG_AS + c_part * 16],
                       wk ? (const void *)(wl + w_at + kk) : wl, wk);
        }
        const uint32_t kb = k0 / 32;
        if (tid < PG_BM * PG_KB) {
            sxd[buf][tid] = xs_ok && kb + s_j < nkb ? xd[xs_src * nkb + kb + s_j] : 0.f;
            swd[buf][tid] = ws_ok && kb + s_j < nkb ? ws[ws_at + kb + s_j] : 0.f;
        }
    };

    const uint32_t wm = (warp >> 2) * 32, wn = (warp & 3) * 16;
    float acc[2][2][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[i][j][c] = 0.f;

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
            for (int ni = 0; ni < 2; ni++) {
                const uint32_t wo = (wn + ni * 8 + g) * PG_AS + kb * 32 + tig * 4;
                const int8_t *pw = &sw[buf][0][wo];
                const int bf0 = *(const int *)pw, bf1 = *(const int *)(pw + 16);
                int bl0 = 0, bl1 = 0;
                if (W2) {
                    const int8_t *pl = &sw[buf][W2 ? 1 : 0][wo];
                    bl0 = *(const int *)pl;
                    bl1 = *(const int *)(pl + 16);
                }
                const uint32_t cc = wn + ni * 8 + tig * 2;
                const float w0s = swd[buf][cc * PG_KB + kb], w1s = swd[buf][(cc + 1) * PG_KB + kb];
#pragma unroll
                for (int mi = 0; mi < 2; mi++) {
                    // Accumulators start at MM_MAGIC, so each int32 result r (|r| < 2^22) reads
                    // as the float 1.5 * 2^23 + r: converted without I2F (a quarter-rate
                    // instruction that would bound this loop).
                    int ch[4] = {MM_MAGIC, MM_MAGIC, MM_MAGIC, MM_MAGIC};
                    int cl[4] = {MM_MAGIC, MM_MAGIC, MM_MAGIC, MM_MAGIC};
                    mma_s8(ch, ah[mi], bf0, bf1);
                    mma_s8(cl, al[mi], bf0, bf1);
                    // The low weight plane's products (W2): (128 wq + wl) . x.
                    int dh[4] = {MM_MAGIC, MM_MAGIC, MM_MAGIC, MM_MAGIC};
                    int dl[4] = {MM_MAGIC, MM_MAGIC, MM_MAGIC, MM_MAGIC};
                    if (W2) {
                        mma_s8(dh, ah[mi], bl0, bl1);
                        mma_s8(dl, al[mi], bl0, bl1);
                    }
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        const float sc = xs[mi][c >> 1] * ((c & 1) ? w1s : w0s);
                        const float fh = __int_as_float(ch[c]) - MM_MAGIC_F;
                        const float fl = __int_as_float(cl[c]) - MM_MAGIC_F;
                        float v = fmaf(fh, 128.f, fl);
                        if (W2) {
                            const float gh = __int_as_float(dh[c]) - MM_MAGIC_F;
                            const float gl = __int_as_float(dl[c]) - MM_MAGIC_F;
                            v = fmaf(v, 128.f, fmaf(gh, 128.f, gl));
                        }
                        acc[mi][ni][c] += v * sc;
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
                *(float2 *)(yr + col) =
                    make_float2(acc[mi][ni][2 * h] + bias[bo], acc[mi][ni][2 * h + 1] + bias[bo + 1]);
            }
        }
    }
}

// The two instantiations: pg_q8 (one plane, `wl` unused) and pg_q8w2 (two planes).
#define PG_Q8_KERNEL(NAME, W2)                                                                   \
    extern "C" __global__ void __launch_bounds__(PG_THREADS) NAME(                               \
        const int8_t *__restrict__ xh, const int8_t *__restrict__ xl, const float *__restrict__ xd, \
        const uint32_t *__restrict__ row_map, const uint32_t *__restrict__ tiles,                 \
        const int8_t *__restrict__ wq, const int8_t *__restrict__ wl, const float *__restrict__ ws, \
        const float *__restrict__ bias, float *__restrict__ y, const uint32_t n, const uint32_t k) { \
        pg_q8_body<W2>(xh, xl, xd, row_map, tiles, wq, wl, ws, bias, y, n, k);                 \
    }
PG_Q8_KERNEL(pg_q8, false)
PG_Q8_KERNEL(pg_q8w2, true)

// ---------------------------------------------------------------------------------------------
// The MXFP4 expert GEMMs on bf16 tensor cores (mma.sync m16n8k16, f32 accumulation). (An int8
// version in the style of pg_q8 spent most of its time rescaling every accumulator per block;
// this one has nothing to rescale.) MXFP4 values times their power-of-two block scale are
// exact in bf16, so each stage's weights are dequantized into shared memory with the scale
// folded in, and the f32 inputs arrive as two bf16 planes, x = hi + lo (|x - hi - lo| <=
// 2^-17 |x|), each multiplied in turn. Tiles of PG_BM slots x PG_BN2 columns per matrix (8
// warps of 32 x 32, so each shared-memory fragment feeds 4 to 8 MMAs) with PG_BK2 = 32 (one
// MXFP4 block) per stage: activations in a ring of PG_NS stages filled by cp.async (three
// stages ahead), weights loaded to registers two stages ahead and dequantized into a double
// buffer after each stage's MMAs; one barrier per stage. Shared memory is dynamic (PG_A_BYTES +
// PG_W_BYTES, over the 48 KiB static limit): the launcher raises the kernel's limit.

#define PG_BK2 32
#define PG_S2 (PG_BK2 + 8)  // bf16 per smem row: 80 bytes, conflict-free for ldmatrix
#define PG_NS 4             // activation stages in the ring
#define PG_BN2 128          // output columns per block (per matrix): warps of 32 x 32
// Dynamic shared memory of pg_gemm_bf16<MATS>: the activation ring, then two weight stages.
#define PG_A_BYTES (PG_NS * 2 * PG_BM * PG_S2 * 2)
#define PG_W_BYTES(mats) (2 * (mats) * PG_BN2 * PG_S2 * 2)

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// c += a (16x16 bf16, row) * b (16x8 bf16, col).
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t hfma2_bf16(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t d;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

__device__ __forceinline__ uint32_t bf16x2_of(float lo, float hi) {
    uint32_t d;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
}

// Four nibbles (the low 16 bits of q) to four bytes 64 + (doubled E2M1 value), byte i from
// nibble i (mx_lut4's table shifted by 64, so every byte is in [52, 76]).
__device__ __forceinline__ uint32_t mx_lut4_off64(uint32_t q) {
    const uint32_t sel = q & 0x7777u;
    const uint32_t pos = __byte_perm(0x43424140u, 0x4C484644u, sel);
    const uint32_t neg = __byte_perm(0x3D3E3F40u, 0x34383A3Cu, sel);
    return __byte_perm(pos, neg, 0x3210u | ((q & 0x8888u) >> 1));
}

// 16 weights (8 nibble bytes qb = elements j0..j0+7 low, j0+16..j0+23 high) of one MXFP4 block
// with exponent e, as bf16 into dst[j0..j0+7] and dst[j0+16..j0+23] (dst: one smem row).
__device__ __forceinline__ void mx_dequant16_bf16(uint2 qb, uint32_t e, uint16_t *dst, uint32_t j0) {
    uint32_t lo4[4], hi4[4];
    if (e >= 2 && e <= 240) {
        // bf16 bits 0x43XX with XX = 64 + v are 192 + v; (x - 192) * 2^(e-128) is exact.
        const uint32_t sbits = (e - 1) << 7;  // bf16 of 2^(e - 128)
        const uint32_t s2 = sbits | (sbits << 16);
        const uint32_t bbits = 0x8000u | ((e + 6) << 7) | 0x40u;  // -192 * 2^(e - 128)
        const uint32_t b2 = bbits | (bbits << 16);
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const uint32_t w = (c < 2 ? qb.x : qb.y) >> (16 * (c & 1));
            const uint32_t v = mx_lut4_off64(w);
            lo4[c] = hfma2_bf16(__byte_perm(v, 0x43u, 0x4240u), s2, b2);  // elements 2c, 2c+1
            hi4[c] = hfma2_bf16(__byte_perm(v, 0x43u, 0x4341u), s2, b2);  // elements 16+2c, 17+2c
        }
    } else {
        const float sc = mxfp4_scale((uint8_t)e);
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const uint32_t byte0 = ((c < 2 ? qb.x : qb.y) >> (16 * (c & 1))) & 0xFFu;
            const uint32_t byte1 = ((c < 2 ? qb.x : qb.y) >> (16 * (c & 1) + 8)) & 0xFFu;
            lo4[c] = bf16x2_of(mxfp4_kv(byte0 & 15u) * sc, mxfp4_kv(byte1 & 15u) * sc);
            hi4[c] = bf16x2_of(mxfp4_kv(byte0 >> 4) * sc, mxfp4_kv(byte1 >> 4) * sc);
        }
    }
    *(uint4 *)(dst + j0) = make_uint4(lo4[0], lo4[1], lo4[2], lo4[3]);
    *(uint4 *)(dst + j0 + 16) = make_uint4(hi4[0], hi4[1], hi4[2], hi4[3]);
}

// Planar MXFP4 weights (wq u8 (e, n, k/2), ws u8 (e, n, k/32)) against bf16 planes xh, xl
// (rows, k). MATS = 2: gate and up through SwiGLU.
template <int MATS>
__device__ __forceinline__ void pg_gemm_bf16(const uint16_t *__restrict__ xh, const uint16_t *__restrict__ xl,
                                             const uint32_t *__restrict__ row_map,
                                             const uint32_t *__restrict__ tiles, const uint8_t *__restrict__ w0,
                                             const uint8_t *__restrict__ s0, const uint8_t *__restrict__ w1,
                                             const uint8_t *__restrict__ s1, const float *__restrict__ b0,
                                             const float *__restrict__ b1, float *__restrict__ y,
                                             const uint32_t n, const uint32_t k, const float alpha,
                                             const float limit) {
    constexpr int WR = MATS * PG_BN2;  // weight rows per stage
    constexpr int WT = MATS;           // weight half-rows each thread stages (WR * 2 / PG_THREADS)
    extern __shared__ __align__(16) uint8_t pg_smem[];
    // sa[stage][hi/lo][row * PG_S2 + k], sw[stage][row * PG_S2 + k]
    auto sa = reinterpret_cast<uint16_t (*)[2][PG_BM * PG_S2]>(pg_smem);
    auto sw = reinterpret_cast<uint16_t (*)[WR * PG_S2]>(pg_smem + PG_A_BYTES);

    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t g = lane >> 2, tig = lane & 3;
    const uint32_t e = tiles[3 * blockIdx.y], m0 = tiles[3 * blockIdx.y + 1];
    const uint32_t rows = min((uint32_t)PG_BM, tiles[3 * blockIdx.y + 2] - m0);
    if (rows == 0) return;  // a padding tile of a device-built plan (uniform per block)
    const uint32_t n0 = blockIdx.x * PG_BN2;
    const uint32_t nkb = k / 32;

    // Activation chunk: row tid/4, 16-byte part tid%4 (8 bf16) of both planes.
    const uint32_t a_row = tid >> 2, a_part = tid & 3;
    const bool a_ok = a_row < rows;
    const uint64_t a_src = a_ok ? (uint64_t)(row_map ? row_map[m0 + a_row] : m0 + a_row) : 0;
    // Weight half-rows: rows tid/2 + 128 j (j < WT) of WR, 8 nibble bytes tid%2.
    const uint32_t w_half = tid & 1;
    const uint8_t *wq[WT];
    const uint8_t *we[WT];
    bool w_ok[WT];
#pragma unroll
    for (int j = 0; j < WT; j++) {
        const uint32_t r = (tid >> 1) + PG_BN2 * j, mat = r / PG_BN2, wn_ = n0 + r % PG_BN2;
        w_ok[j] = wn_ < n;
        const uint64_t at = (uint64_t)e * n + (w_ok[j] ? wn_ : 0);
        wq[j] = (MATS == 2 && mat ? w1 : w0) + at * (k / 2) + w_half * 8;
        we[j] = (MATS == 2 && mat ? s1 : s0) + at * nkb;
    }

    auto load_a = [&](uint32_t kb, uint32_t buf) {
        const uint64_t ao = a_src * k + kb * 32 + a_part * 8;
        cp_async16(&sa[buf][0][a_row * PG_S2 + a_part * 8], a_ok ? (const void *)(xh + ao) : xh, a_ok);
        cp_async16(&sa[buf][1][a_row * PG_S2 + a_part * 8], a_ok ? (const void *)(xl + ao) : xl, a_ok);
    };
    auto load_w = [&](uint32_t kb, uint2 (&q)[WT], uint32_t (&ex)[WT]) {
#pragma unroll
        for (int j = 0; j < WT; j++) {
            if (w_ok[j]) {
                q[j] = *(const uint2 *)(wq[j] + kb * 16);
                ex[j] = we[j][kb];
            }
        }
    };
    auto store_w = [&](uint32_t buf, const uint2 (&q)[WT], const uint32_t (&ex)[WT]) {
#pragma unroll
        for (int j = 0; j < WT; j++)
            mx_dequant16_bf16(q[j], ex[j], &sw[buf][((tid >> 1) + PG_BN2 * j) * PG_S2], w_half * 8);
    };

    const uint32_t wm = (warp >> 2) * 32, wn = (warp & 3) * 32;
    float acc[MATS][2][4][4];
#pragma unroll
    for (int a = 0; a < MATS; a++)
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int c = 0; c < 4; c++) acc[a][i][j][c] = 0.f;

    // ldmatrix lane addresses: A (16 rows x 16 k per call) row lane%16, k half lane/16; B (two
    // n-tiles of 8 x 16 k per call) row lane%8 of n-tile lane/16, k half (lane/8)%2.
    const uint32_t la_row = lane & 15, la_k = (lane >> 4) * 8;
    const uint32_t lb_row = (lane & 7) + ((lane >> 4) << 3), lb_k = ((lane >> 3) & 1) * 8;

    // Stages 0 .. PG_NS - 2 of the activations in flight; weights of stage 0 in shared memory,
    // of stage 1 in registers (wcur).
#pragma unroll
    for (uint32_t st = 0; st < PG_NS - 1; st++) {
        if (st < nkb) load_a(st, st);
        cp_async_commit();
    }
    uint2 wcur[WT], wnxt[WT];
    uint32_t ecur[WT], enxt[WT];
#pragma unroll
    for (int j = 0; j < WT; j++) {
        wcur[j] = wnxt[j] = make_uint2(0, 0);
        ecur[j] = enxt[j] = 0;
    }
    load_w(0, wnxt, enxt);
    store_w(0, wnxt, enxt);
    if (nkb > 1) load_w(1, wcur, ecur);
    for (uint32_t kb = 0; kb < nkb; kb++) {
        // Stage kb has landed (at most PG_NS - 2 later groups pending), and every warp is past
        // stage kb - 1, whose activation slot and weight buffer are refilled below.
        cp_async_wait<PG_NS - 2>();
        __syncthreads();
        const uint32_t buf = kb % PG_NS, wbuf = kb & 1;
        if (kb + PG_NS - 1 < nkb) load_a(kb + PG_NS - 1, (kb + PG_NS - 1) % PG_NS);
        cp_async_commit();
        if (kb + 2 < nkb) load_w(kb + 2, wnxt, enxt);
#pragma unroll
        for (int ks = 0; ks < 2; ks++) {
            uint32_t af[2][2][4];  // [mi][hi/lo]
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int pl = 0; pl < 2; pl++)
                    ldsm_x4(af[mi][pl], &sa[buf][pl][(wm + mi * 16 + la_row) * PG_S2 + ks * 16 + la_k]);
#pragma unroll
            for (int mat = 0; mat < MATS; mat++) {
#pragma unroll
                for (int np = 0; np < 2; np++) {
                    uint32_t bq[4];  // b0, b1 of n-tile 2 np, then of 2 np + 1
                    ldsm_x4(bq, &sw[wbuf][(mat * PG_BN2 + wn + np * 16 + lb_row) * PG_S2 + ks * 16 + lb_k]);
#pragma unroll
                    for (int mi = 0; mi < 2; mi++)
#pragma unroll
                        for (int pl = 0; pl < 2; pl++) {
                            mma_bf16(acc[mat][mi][2 * np], af[mi][pl], bq[0], bq[1]);
                            mma_bf16(acc[mat][mi][2 * np + 1], af[mi][pl], bq[2], bq[3]);
                        }
                }
            }
        }
        if (kb + 1 < nkb) store_w(wbuf ^ 1, wcur, ecur);
#pragma unroll
        for (int j = 0; j < WT; j++) {
            wcur[j] = wnxt[j];
            ecur[j] = enxt[j];
        }
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
            for (int ni = 0; ni < 4; ni++) {
                const uint32_t col = n0 + wn + ni * 8 + tig * 2;
                if (col >= n) continue;
                const uint64_t bo = (uint64_t)e * n + col;
                float v0 = acc[0][mi][ni][2 * h] + b0[bo];
                float v1 = acc[0][mi][ni][2 * h + 1] + b0[bo + 1];
                if (MATS == 2) {
                    v0 = swiglu_oai(v0, acc[MATS - 1][mi][ni][2 * h] + b1[bo], alpha, limit);
                    v1 = swiglu_oai(v1, acc[MATS - 1][mi][ni][2 * h + 1] + b1[bo + 1], alpha, limit);
                }
                *(float2 *)(yr + col) = make_float2(v0, v1);
            }
        }
    }
}

#define PGB_ARGS                                                                                   \
    const uint16_t *__restrict__ xh, const uint16_t *__restrict__ xl,                              \
        const uint32_t *__restrict__ row_map, const uint32_t *__restrict__ tiles,                  \
        const uint8_t *__restrict__ w0, const uint8_t *__restrict__ s0, const uint8_t *__restrict__ w1, \
        const uint8_t *__restrict__ s1, const float *__restrict__ b0, const float *__restrict__ b1, \
        float *__restrict__ y, const uint32_t n, const uint32_t k, const float alpha, const float limit
#define PGB_PASS xh, xl, row_map, tiles, w0, s0, w1, s1, b0, b1, y, n, k, alpha, limit

// Grid (ceil(n / PG_BN2), tiles), PG_THREADS threads, PG_A_BYTES + PG_W_BYTES(1 or 2) bytes of
// dynamic shared memory. pg_mxb ignores w1, s1, b1, alpha, limit.
extern "C" __global__ void __launch_bounds__(PG_THREADS, 2) pg_mxb(PGB_ARGS) { pg_gemm_bf16<1>(PGB_PASS); }
extern "C" __global__ void __launch_bounds__(PG_THREADS, 2) pg_mxb_swiglu(PGB_ARGS) { pg_gemm_bf16<2>(PGB_PASS); }

// x f32 (n) to bf16 planes: hi = bf16(x), lo = bf16(x - hi). Grid-stride.
extern "C" __global__ void pg_split_bf16(const float *__restrict__ x, uint16_t *__restrict__ hi,
                                         uint16_t *__restrict__ lo, const uint64_t n) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = x[i];
        const uint32_t h = bf16x2_of(v, 0.f) & 0xFFFFu;
        const float hv = __uint_as_float(h << 16);
        hi[i] = (uint16_t)h;
        lo[i] = (uint16_t)(bf16x2_of(v - hv, 0.f) & 0xFFFFu);
    }
}

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

#define PG_MAX_EXP 256

// The router's choices ids (slots = t * top_k, each < n_exp <= PG_MAX_EXP) grouped by expert,
// in one block of 1024 threads: rows[pos] = token of the slot placed at pos (slots in expert
// order; within an expert in atomic order), at[p] = pos of slot p, tiles = (expert, first slot,
// group end) per PG_BM slots of each group, then empty tiles (0, 0, 0) up to max_tiles.
extern "C" __global__ void pg_route(const uint32_t *__restrict__ ids, uint32_t *__restrict__ rows,
                                    uint32_t *__restrict__ at, uint32_t *__restrict__ tiles,
                                    const uint32_t slots, const uint32_t top_k, const uint32_t n_exp,
                                    const uint32_t max_tiles) {
    __shared__ uint32_t cnt[PG_MAX_EXP], off[PG_MAX_EXP], cur[PG_MAX_EXP], tstart[PG_MAX_EXP + 1];
    const uint32_t tid = threadIdx.x;
    for (uint32_t e = tid; e < n_exp; e += blockDim.x) {
        cnt[e] = 0;
        cur[e] = 0;
    }
    __syncthreads();
    for (uint32_t p = tid; p < slots; p += blockDim.x) atomicAdd(&cnt[ids[p]], 1u);
    __syncthreads();
    if (tid == 0) {
        uint32_t o = 0, tt = 0;
        for (uint32_t e = 0; e < n_exp; e++) {
            off[e] = o;
            tstart[e] = tt;
            o += cnt[e];
            tt += (cnt[e] + PG_BM - 1) / PG_BM;
        }
        tstart[n_exp] = tt;
    }
    __syncthreads();
    for (uint32_t p = tid; p < slots; p += blockDim.x) {
        const uint32_t e = ids[p], pos = off[e] + atomicAdd(&cur[e], 1u);
        rows[pos] = p / top_k;
        at[p] = pos;
    }
    for (uint32_t e = tid; e < n_exp; e += blockDim.x) {
        const uint32_t end = off[e] + cnt[e];
        for (uint32_t i = tstart[e], m0 = off[e]; i < tstart[e + 1]; i++, m0 += PG_BM) {
            tiles[3 * i] = e;
            tiles[3 * i + 1] = m0;
            tiles[3 * i + 2] = end;
        }
    }
    for (uint32_t i = tstart[n_exp] + tid; i < max_tiles; i += blockDim.x) {
        tiles[3 * i] = 0;
        tiles[3 * i + 1] = 0;
        tiles[3 * i + 2] = 0;
    }
}
