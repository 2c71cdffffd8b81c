// The kernels of the batch-1 decode step (GPT-OSS), launched by the engine's fast decoder on
// preallocated buffers with fixed grids, so that one whole step can be captured in a CUDA graph.
//
// Activations are f32. Each matrix-vector product reads its input vector quantized per
// 32-block into two int8 planes, x ~= d * (128 * hi + lo) with |hi| <= 127 and lo in [-64, 63]
// (a 15-bit quantization: error <= d / 2 = amax / 32512), so products run as exact int8 dot
// products (dp4a) at a small cost in precision.
//
// Weight layouts (repacked once at load from ggml blocks, for 16-byte loads):
// - Q8 "split" matrices: qs int8 (n, k) and d f32 (n, k/32) (ggml Q8_0 with scales moved out);
//   two-plane ones add a low plane wl int8 (n, k): weight = d * (128 * qs + wl) (other dense
//   types, held as 15-bit block integers).
// - MXFP4 "planar" experts: qs u8 (e, n, k/2) (block_mxfp4's 16 nibble bytes) and
//   e8 u8 (e, n, k/32) (its exponent byte).
// An input vector consumed by MXFP4 weights is stored permuted within each 32-block so that
// the nibble lookup (mx_lut4) produces int8 lanes in the same order (see perm_pos).
//
// Step parameters live in device memory, written by the host before each step so that a captured
// graph replays unchanged: p[0] = position of the token; for layer il, p[1 + 3 il] = the KV
// row this token writes, p[2 + 3 il] = rows in use after it, p[3 + 3 il] = absolute position of
// row 0.
#include <stdint.h>
#include <cuda_fp16.h>
#include "mxfp4.cuh"
#include "swiglu.cuh"
#include "warp.cuh"
#include "kv.cuh"
#include "pdl.cuh"

#define DEC_WARPS 8              // warps per block of the GEMV kernels
#define DEC_MAX_D 8192           // longest vector the norm kernels hold in shared memory
#define DEC_ATT_D 64             // head dim of the decode attention
#define DEC_ATT_MAX_G 32         // query heads per KV head
#define DEC_MAX_SPLIT 256        // splits of one head's keys
#define Q_HI_MAX 16256.f         // 127 * 128

// Position of element i (0..32) of a block in the permuted (MXFP4-facing) order: for each
// group t of 4, the order is [4t, 4t+16, 4t+1, 4t+17, 4t+2, 4t+18, 4t+3, 4t+19].
__device__ __forceinline__ uint32_t perm_pos(uint32_t i) {
    const uint32_t hi = i >> 4, j = i & 15;
    return 8 * (j >> 2) + 2 * (j & 3) + hi;
}

// Quantizes one 32-block held one value per lane into (hi, lo, d) at block `blk`.
__device__ __forceinline__ void quant_block(float v, uint32_t lane, uint32_t perm, uint64_t blk,
                                            int8_t *__restrict__ qh, int8_t *__restrict__ ql,
                                            float *__restrict__ qd) {
    const float amax = warp_max(fabsf(v));
    const float d = amax / Q_HI_MAX;
    const float inv = amax > 0.f ? Q_HI_MAX / amax : 0.f;
    const int q = __float2int_rn(v * inv);
    const int lo = ((q + 64) & 127) - 64;
    const int hi = (q - lo) / 128;
    const uint64_t at = blk * 32 + (perm ? perm_pos(lane) : lane);
    qh[at] = (int8_t)hi;
    ql[at] = (int8_t)lo;
    if (lane == 0) qd[blk] = d;
}

// One MXFP4 block (16 nibble bytes w, exponent e) against a permuted quantized x block.
__device__ __forceinline__ float mx_block_dot(uint4 w, uint8_t e, const int8_t *__restrict__ xh,
                                              const int8_t *__restrict__ xl, float xd) {
    const int4 h0 = __ldg((const int4 *)xh), h1 = __ldg((const int4 *)xh + 1);
    const int4 l0 = __ldg((const int4 *)xl), l1 = __ldg((const int4 *)xl + 1);
    int sh = 0, sl = 0, a;
    a = mx_lut4(w.x);       sh = __dp4a(a, h0.x, sh); sl = __dp4a(a, l0.x, sl);
    a = mx_lut4(w.x >> 16); sh = __dp4a(a, h0.y, sh); sl = __dp4a(a, l0.y, sl);
    a = mx_lut4(w.y);       sh = __dp4a(a, h0.z, sh); sl = __dp4a(a, l0.z, sl);
    a = mx_lut4(w.y >> 16); sh = __dp4a(a, h0.w, sh); sl = __dp4a(a, l0.w, sl);
    a = mx_lut4(w.z);       sh = __dp4a(a, h1.x, sh); sl = __dp4a(a, l1.x, sl);
    a = mx_lut4(w.z >> 16); sh = __dp4a(a, h1.y, sh); sl = __dp4a(a, l1.y, sl);
    a = mx_lut4(w.w);       sh = __dp4a(a, h1.z, sh); sl = __dp4a(a, l1.z, sl);
    a = mx_lut4(w.w >> 16); sh = __dp4a(a, h1.w, sh); sl = __dp4a(a, l1.w, sl);
    return (float)(sh * 128 + sl) * (mxfp4_scale(e) * xd);
}

// 16 int8 weights against 16 quantized x values (natural order): 128 * hi + lo as one int.
__device__ __forceinline__ int q8_chunk_dot(int4 w, int4 h, int4 l) {
    int sh = __dp4a(w.x, h.x, 0), sl = __dp4a(w.x, l.x, 0);
    sh = __dp4a(w.y, h.y, sh); sl = __dp4a(w.y, l.y, sl);
    sh = __dp4a(w.z, h.z, sh); sl = __dp4a(w.z, l.z, sl);
    sh = __dp4a(w.w, h.w, sh); sl = __dp4a(w.w, l.w, sl);
    return sh * 128 + sl;
}

// Row `row` of a Q8 split matrix (k columns) against a quantized x: the warp's dot product
// (every lane returns the full sum). A two-plane matrix (`wl` not null) holds each weight as
// d * (128 * w + wl), a 15-bit integer per 32-block scale.
__device__ __forceinline__ float q8_row_dot(const int8_t *__restrict__ w, const int8_t *__restrict__ wl,
                                            const float *__restrict__ wd, uint64_t row, uint32_t k,
                                            const int8_t *__restrict__ qh, const int8_t *__restrict__ ql,
                                            const float *__restrict__ qd, uint32_t lane) {
    const int4 *w4 = (const int4 *)(w + row * k);
    const int4 *wl4 = wl ? (const int4 *)(wl + row * k) : nullptr;
    const float *wdr = wd + row * (k / 32);
    const int4 *h4 = (const int4 *)qh, *l4 = (const int4 *)ql;
    float acc = 0.f;
    const uint32_t chunks = k / 16;
    if (wl4) {
#pragma unroll 4
        for (uint32_t c = lane; c < chunks; c += 32) {
            const int4 h = __ldg(h4 + c), l = __ldg(l4 + c);
            const float sh = (float)q8_chunk_dot(__ldg(w4 + c), h, l);
            const float sl = (float)q8_chunk_dot(__ldg(wl4 + c), h, l);
            acc += fmaf(sh, 128.f, sl) * (__ldg(wdr + c / 2) * __ldg(qd + c / 2));
        }
    } else {
#pragma unroll 4
        for (uint32_t c = lane; c < chunks; c += 32) {
            const int s = q8_chunk_dot(__ldg(w4 + c), __ldg(h4 + c), __ldg(l4 + c));
            acc += (float)s * (__ldg(wdr + c / 2) * __ldg(qd + c / 2));
        }
    }
    return warp_sum(acc);
}

// Loads x (k) into sx and returns rsqrt(mean(x^2) + eps), reduced over the whole block
// (`part`: 32 floats of shared memory, free again once every thread has the result).
__device__ float block_rms_load(const float *__restrict__ x, float *sx, uint32_t k, float eps,
                                float *part) {
    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    float ss = 0.f;
    for (uint32_t i = tid; i < k; i += blockDim.x) {
        const float v = x[i];
        sx[i] = v;
        ss += v * v;
    }
    ss = warp_sum(ss);
    if (lane == 0) part[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? part[lane] : 0.f;
        t = warp_sum(t);
        if (lane == 0) part[0] = t;
    }
    __syncthreads();
    const float scale = rsqrtf(part[0] / (float)k + eps);
    __syncthreads();
    return scale;
}

// One block: y = x * rsqrt(mean(x^2) + eps) * w, written to xn (if not null) and quantized into
// (qh, ql, qd) (permuted if `perm`). k <= DEC_MAX_D, k % 32 == 0.
extern "C" __global__ void dec_rmsnorm_quant(const float *__restrict__ x, const float *__restrict__ w,
                                             const float eps, const uint32_t k, float *__restrict__ xn,
                                             int8_t *__restrict__ qh, int8_t *__restrict__ ql,
                                             float *__restrict__ qd, const uint32_t perm) {
    __shared__ float sx[DEC_MAX_D];
    __shared__ float part[32];
    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    pdl_begin();
    const float scale = block_rms_load(x, sx, k, eps, part);
    for (uint32_t i = tid; i < k; i += blockDim.x) {
        const float v = sx[i] * scale * w[i];
        sx[i] = v;
        if (xn) xn[i] = v;
    }
    __syncthreads();
    for (uint32_t b = warp; b < k / 32; b += nw) {
        quant_block(sx[b * 32 + lane], lane, perm, b, qh, ql, qd);
    }
}

// Quantizes `nblocks` 32-blocks of x: one warp per block.
extern "C" __global__ void dec_quant(const float *__restrict__ x, const uint32_t nblocks,
                                     int8_t *__restrict__ qh, int8_t *__restrict__ ql,
                                     float *__restrict__ qd, const uint32_t perm) {
    const uint32_t lane = threadIdx.x & 31;
    pdl_begin();
    const uint32_t b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (b >= nblocks) return;
    quant_block(x[(uint64_t)b * 32 + lane], lane, perm, b, qh, ql, qd);
}

// y[row] (+)= W[row] . x + bias[row] for a Q8 split W (n, k) (two-plane when `wl` is not null).
// One warp per row, DEC_WARPS rows per block. `accumulate` adds into y (the residual stream).
extern "C" __global__ void dec_q8_gemv(const int8_t *__restrict__ w, const int8_t *__restrict__ wl,
                                       const float *__restrict__ wd,
                                       const float *__restrict__ bias, const int8_t *__restrict__ qh,
                                       const int8_t *__restrict__ ql, const float *__restrict__ qd,
                                       float *__restrict__ y, const uint32_t n, const uint32_t k,
                                       const uint32_t accumulate) {
    const uint32_t lane = threadIdx.x & 31;
    const uint64_t row = (uint64_t)blockIdx.x * DEC_WARPS + (threadIdx.x >> 5);
    pdl_begin();
    if (row >= n) return;
    const float acc = q8_row_dot(w, wl, wd, row, k, qh, ql, qd, lane);
    if (lane == 0) {
        const float v = acc + (bias ? bias[row] : 0.f);
        y[row] = accumulate ? y[row] + v : v;
    }
}

// The fused QKV projection (rows: hq heads of q, hkv of k, hkv of v; hd each) with bias and
// NeoX RoPE on q and k (cos, sin of pos * inv_freq[i], times mscale); q goes to q_out
// (hq * hd), k and v to row p[1 + 3 layer] of the layer's caches (cap, hkv, hd). One warp per
// pair of rows (i, i + hd/2) of a head. `wl`: as dec_q8_gemv's. The caches are f32
// (dec_qkv_rope) or f16 (dec_qkv_rope_h).
template <typename KV>
__device__ __forceinline__ void dec_qkv_rope_body(
    const int8_t *__restrict__ w, const int8_t *__restrict__ wl, const float *__restrict__ wd,
    const float *__restrict__ bias, const int8_t *__restrict__ qh, const int8_t *__restrict__ ql,
    const float *__restrict__ qd, const uint32_t k, const uint32_t hq, const uint32_t hkv,
    const uint32_t hd, const float *__restrict__ inv_freq, const float mscale,
    const int32_t *__restrict__ p, const uint32_t layer, float *__restrict__ q_out,
    KV *__restrict__ k_cache, KV *__restrict__ v_cache) {
    const uint32_t lane = threadIdx.x & 31;
    const uint32_t half = hd / 2;
    const uint32_t pair = blockIdx.x * DEC_WARPS + (threadIdx.x >> 5);
    pdl_begin();
    if (pair >= (hq + 2 * hkv) * half) return;
    const uint32_t head = pair / half, i = pair % half;
    const uint64_t ra = (uint64_t)head * hd + i, rb = ra + half;
    float a = q8_row_dot(w, wl, wd, ra, k, qh, ql, qd, lane) + bias[ra];
    float b = q8_row_dot(w, wl, wd, rb, k, qh, ql, qd, lane) + bias[rb];
    if (lane != 0) return;
    if (head < hq + hkv) {
        const float theta = (float)p[0] * inv_freq[i];
        const float c = cosf(theta) * mscale, s = sinf(theta) * mscale;
        const float a2 = a * c - b * s;
        b = b * c + a * s;
        a = a2;
    }
    if (head < hq) {
        q_out[ra] = a;
        q_out[rb] = b;
        return;
    }
    const uint64_t row = (uint64_t)p[1 + 3 * layer];
    const bool is_k = head < hq + hkv;
    const uint32_t kvh = is_k ? head - hq : head - hq - hkv;
    KV *dst = (is_k ? k_cache : v_cache) + (row * hkv + kvh) * hd;
    kv_store(dst + i, a);
    kv_store(dst + i + half, b);
}

#define DEC_QKV_ROPE_KERNEL(NAME, KV)                                                            \
    extern "C" __global__ void NAME(                                                             \
        const int8_t *__restrict__ w, const int8_t *__restrict__ wl, const float *__restrict__ wd, \
        const float *__restrict__ bias, const int8_t *__restrict__ qh,                           \
        const int8_t *__restrict__ ql, const float *__restrict__ qd, const uint32_t k,           \
        const uint32_t hq, const uint32_t hkv, const uint32_t hd,                                \
        const float *__restrict__ inv_freq, const float mscale, const int32_t *__restrict__ p,   \
        const uint32_t layer, float *__restrict__ q_out, KV *__restrict__ k_cache,               \
        KV *__restrict__ v_cache) {                                                              \
        dec_qkv_rope_body<KV>(w, wl, wd, bias, qh, ql, qd, k, hq, hkv, hd, inv_freq, mscale, p,  \
                              layer, q_out, k_cache, v_cache);                                   \
    }
DEC_QKV_ROPE_KERNEL(dec_qkv_rope, float)
DEC_QKV_ROPE_KERNEL(dec_qkv_rope_h, __half)

// Decode attention with sinks, split over the keys. Grid (hkv, nsplit, rows); block 32 * G
// threads (G = hq / hkv query heads share a KV head; warp g takes head kvh * G + g). Query row
// r (blockIdx.z) reads q + r hq hd, its block table at table + r table_stride and its
// position p[r p_stride] and key offset kv_off = p[r p_stride + off_at]. Visible keys: rows j
// with kv_off + j <= pos and (window == 0 or pos - (kv_off + j) < window). Split s takes an
// equal share of them, in tiles of 32 keys staged in shared memory. Writes the unnormalized
// partial (m, l, acc[hd]) of each (row, head, split); empty splits write (-inf, 0, 0). hd is
// 32 or DEC_ATT_D (64).
// Paged caches: with a block table (non-null `table`), row j lives at row
// table[j / bs] * bs + j % bs of kc and vc (the KV pool's blocks); without, at row j. The
// caches are f32 (dec_attn_split) or f16 (dec_attn_split_h).
template <typename KV>
__device__ __forceinline__ void dec_attn_split_body(
    const float *__restrict__ q, const KV *__restrict__ kc, const KV *__restrict__ vc,
    const int32_t *__restrict__ table, const uint32_t bs, const uint32_t table_stride,
    const int32_t *__restrict__ p, const uint32_t p_stride, const uint32_t off_at,
    const uint32_t hkv, const uint32_t hd, const uint32_t window, const float scale,
    float *__restrict__ part_m, float *__restrict__ part_l, float *__restrict__ part_acc) {
    // Tiles of 32 keys in their cache type. A key row is padded by 16 bytes so that the lanes'
    // 16-byte reads of their own key rows fall in distinct banks (8 lanes per phase).
    constexpr uint32_t CH = 16 / sizeof(KV); // elements per 16-byte chunk
    __shared__ __align__(16) KV ks[32][DEC_ATT_D + CH];
    __shared__ __align__(16) KV vs[32][DEC_ATT_D];
    __shared__ __align__(16) float qs[DEC_ATT_MAX_G][DEC_ATT_D];
    const uint32_t kvh = blockIdx.x, split = blockIdx.y, nsplit = gridDim.y, r = blockIdx.z;
    const uint32_t tid = threadIdx.x, lane = tid & 31, g = tid >> 5, groups = blockDim.x >> 5;
    pdl_begin();
    const uint32_t h = kvh * groups + g;
    const uint64_t hq = (uint64_t)hkv * groups;
    q += r * hq * hd;
    if (table) table += (uint64_t)r * table_stride;
    p += (uint64_t)r * p_stride;
    for (uint32_t c = lane; c < hd; c += 32) qs[g][c] = q[(uint64_t)h * hd + c];

    const int64_t pos = p[0];
    const int64_t kv_off = p[off_at];
    const int64_t hi = pos - kv_off;
    int64_t lo = window ? pos - (int64_t)window + 1 - kv_off : 0;
    if (lo < 0) lo = 0;
    const int64_t len = hi - lo + 1;
    int64_t per = (len + nsplit - 1) / nsplit;
    per = (per + 31) / 32 * 32;
    const int64_t lo_s = lo + (int64_t)split * per;
    int64_t hi_s = lo_s + per - 1;
    if (hi_s > hi) hi_s = hi;

    float m = -INFINITY, l = 0.f;
    float acc0 = 0.f, acc1 = 0.f; // dims 2 lane and 2 lane + 1
    const uint32_t nch = hd / CH; // chunks per key row
    for (int64_t j0 = lo_s; j0 <= hi_s; j0 += 32) {
        __syncthreads();
        for (uint32_t idx = tid; idx < 32 * nch; idx += blockDim.x) {
            const uint32_t r = idx / nch, c = (idx % nch) * CH;
            const int64_t j = j0 + r;
            uint4 kv = make_uint4(0u, 0u, 0u, 0u), vv = kv;
            if (j <= hi_s) {
                const uint64_t pr =
                    table ? (uint64_t)table[j / bs] * bs + (uint64_t)(j % bs) : (uint64_t)j;
                const uint64_t off = (pr * hkv + kvh) * hd + c;
                kv = *(const uint4 *)(kc + off);
                vv = *(const uint4 *)(vc + off);
            }
            *(uint4 *)&ks[r][c] = kv;
            *(uint4 *)&vs[r][c] = vv;
        }
        __syncthreads();
        const bool valid = j0 + lane <= hi_s;
        float s = -INFINITY;
        if (valid) {
            // q · k over 8-element pieces, alternating between two sums (the same order for
            // both element types: an f16 cache gives the f32 result of its widened values).
            float d0 = 0.f, d1 = 0.f;
#pragma unroll 4
            for (uint32_t c = 0; c < hd; c += 16) {
                d0 = kv_dot8(&ks[lane][c], &qs[g][c], d0);
                d1 = kv_dot8(&ks[lane][c + 8], &qs[g][c + 8], d1);
            }
            s = (d0 + d1) * scale;
        }
        const float mnew = fmaxf(m, warp_max(s));
        const float corr = expf(m - mnew);
        const float pj = valid ? expf(s - mnew) : 0.f;
        l = l * corr + warp_sum(pj);
        acc0 *= corr;
        acc1 *= corr;
        // Lanes past hd / 2 (hd 32) read unused row elements and write nothing.
#pragma unroll 8
        for (uint32_t jj = 0; jj < 32; ++jj) {
            const float pb = __shfl_sync(0xffffffffu, pj, jj);
            const float2 v = kv_load2(&vs[jj][2 * lane]);
            acc0 += pb * v.x;
            acc1 += pb * v.y;
        }
        m = mnew;
    }
    const uint64_t at = ((uint64_t)r * hq + h) * nsplit + split;
    if (lane == 0) {
        part_m[at] = m;
        part_l[at] = l;
    }
    if (2 * lane < hd) {
        part_acc[at * hd + 2 * lane] = acc0;
        part_acc[at * hd + 2 * lane + 1] = acc1;
    }
}

#define DEC_ATTN_SPLIT_KERNEL(NAME, KV)                                                          \
    extern "C" __global__ void NAME(                                                             \
        const float *__restrict__ q, const KV *__restrict__ kc, const KV *__restrict__ vc,       \
        const int32_t *__restrict__ table, const uint32_t bs, const uint32_t table_stride,       \
        const int32_t *__restrict__ p, const uint32_t p_stride, const uint32_t off_at,           \
        const uint32_t hkv, const uint32_t hd, const uint32_t window, const float scale,         \
        float *__restrict__ part_m, float *__restrict__ part_l, float *__restrict__ part_acc) {  \
        dec_attn_split_body<KV>(q, kc, vc, table, bs, table_stride, p, p_stride, off_at, hkv, hd, \
                                window, scale, part_m, part_l, part_acc);                        \
    }
DEC_ATTN_SPLIT_KERNEL(dec_attn_split, float)
DEC_ATTN_SPLIT_KERNEL(dec_attn_split_h, __half)

// Combines the splits of each head with its sink, out = sum_s acc_s e^(m_s - M) /
// (sum_s l_s e^(m_s - M) + e^(S_h - M)), for query row r = blockIdx.y (partials at
// (r hq + h) nsplit). With `out` non-null the (rows, hq * hd) result is written there in f32;
// otherwise row 0 is quantized into (qh, ql, qd) for the output projection. Grid (hq, rows);
// block hd * G threads (G groups of splits; hd % 32 == 0, nsplit <= DEC_MAX_SPLIT).
extern "C" __global__ void dec_attn_combine(const float *__restrict__ part_m,
                                            const float *__restrict__ part_l,
                                            const float *__restrict__ part_acc,
                                            const float *__restrict__ sinks, const uint32_t nsplit,
                                            const uint32_t hd, int8_t *__restrict__ qh,
                                            int8_t *__restrict__ ql, float *__restrict__ qd,
                                            float *__restrict__ out) {
    __shared__ float f[DEC_MAX_SPLIT];
    __shared__ float red[32];
    __shared__ float num[1024];
    const uint32_t h = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t nw = blockDim.x >> 5, groups = blockDim.x / hd, c = tid % hd, g = tid / hd;
    const uint64_t hr = (uint64_t)blockIdx.y * gridDim.x + h; // (row, head)
    pdl_begin();
    const float *pm = part_m + hr * nsplit;
    const float *pl = part_l + hr * nsplit;
    const float sink = sinks[h];
    // M = max(sink, m_s)
    float mm = sink;
    for (uint32_t s = tid; s < nsplit; s += blockDim.x) mm = fmaxf(mm, pm[s]);
    mm = warp_max(mm);
    if (lane == 0) red[warp] = mm;
    __syncthreads();
    mm = red[0];
    for (uint32_t w = 1; w < nw; ++w) mm = fmaxf(mm, red[w]);
    __syncthreads();
    // Factors and the denominator.
    float den = 0.f;
    for (uint32_t s = tid; s < nsplit; s += blockDim.x) {
        const float fs = expf(pm[s] - mm);
        f[s] = fs;
        den += pl[s] * fs;
    }
    den = warp_sum(den);
    if (lane == 0) red[warp] = den;
    __syncthreads();
    den = expf(sink - mm);
    for (uint32_t w = 0; w < nw; ++w) den += red[w];
    // Numerators: group g sums the splits s = g, g + G, ...
    const float *pa = part_acc + hr * nsplit * hd;
    float acc = 0.f;
#pragma unroll 4
    for (uint32_t s = g; s < nsplit; s += groups) acc += pa[(uint64_t)s * hd + c] * f[s];
    num[tid] = acc;
    __syncthreads();
    if (g == 0) {
        for (uint32_t gg = 1; gg < groups; ++gg) acc += num[gg * hd + c];
        const uint64_t idx = hr * hd + c;
        if (out)
            out[idx] = acc / den;
        else
            quant_block(acc / den, lane, 0, idx / 32, qh, ql, qd);
    }
}

// Top-k of e <= 256 logits (ties to the lower index) and softmax over the chosen ones, by one
// warp; lane 0 writes ids and weights (topk <= 32).
__device__ void route_topk(const float *__restrict__ logits, uint32_t e, uint32_t topk,
                           uint32_t lane, uint32_t *ids, float *wts) {
    float v[8];
    uint32_t taken = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const uint32_t idx = lane + 32 * i;
        v[i] = idx < e ? __ldcg(logits + idx) : -INFINITY;
    }
    float top0 = 0.f, sum = 0.f;
    for (uint32_t c = 0; c < topk; ++c) {
        float bv = -INFINITY;
        uint32_t bi = 0xffffffffu;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const uint32_t idx = lane + 32 * i;
            if (idx < e && !((taken >> i) & 1u) && (bi == 0xffffffffu || v[i] > bv)) {
                bv = v[i];
                bi = idx;
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
            const uint32_t oi = __shfl_xor_sync(0xffffffffu, bi, off);
            if (oi != 0xffffffffu && (bi == 0xffffffffu || ov > bv || (ov == bv && oi < bi))) {
                bv = ov;
                bi = oi;
            }
        }
        if (bi != 0xffffffffu && (bi & 31) == lane) taken |= 1u << (bi >> 5);
        if (c == 0) top0 = bv;
        const float ex = expf(bv - top0);
        sum += ex;
        if (lane == 0) {
            ids[c] = bi;
            wts[c] = ex;
        }
    }
    if (lane == 0) {
        for (uint32_t c = 0; c < topk; ++c) wts[c] /= sum;
    }
}

// logits[r] = W[r] . xs + b[r] for r = blockIdx.x (W f32 (e, k), e = gridDim.x; xs: k floats,
// global or shared, 16-byte aligned); the last block to finish (counted in `counter`, which it
// resets) ranks the experts: top-k (ties to the lower index) and the softmax of their logits
// into ids and wts (topk <= 32). `red`: 32 floats of shared memory.
__device__ void router_row_rank(const float *xs, const float *__restrict__ w,
                                const float *__restrict__ b, uint32_t k, float *__restrict__ logits,
                                uint32_t topk, uint32_t *__restrict__ ids, float *__restrict__ wts,
                                uint32_t *__restrict__ counter, float *red) {
    __shared__ bool last;
    const uint32_t r = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const float4 *w4 = (const float4 *)(w + (uint64_t)r * k);
    const float4 *x4 = (const float4 *)xs;
    float acc = 0.f;
#pragma unroll 4
    for (uint32_t c = tid; c < k / 4; c += blockDim.x) {
        const float4 a = __ldg(w4 + c), v = x4[c];
        acc += a.x * v.x + a.y * v.y + a.z * v.z + a.w * v.w;
    }
    acc = warp_sum(acc);
    if (lane == 0) red[warp] = acc;
    __syncthreads();
    if (tid == 0) {
        float t = 0.f;
        for (uint32_t i = 0; i < (blockDim.x >> 5); ++i) t += red[i];
        logits[r] = t + b[r];
        __threadfence();
        last = atomicAdd(counter, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (last && warp == 0) {
        __threadfence();
        route_topk(logits, gridDim.x, topk, lane, ids, wts);
        if (lane == 0) *counter = 0;
    }
}

// The MoE router of t token rows (the batched step and prefill; grid t, block 256): each
// warp computes a share of row blockIdx.x's logits (t, e) = x (t, k) . W (e, k)^T + b into
// `logits`, then warp 0 ranks the row (route_topk) into ids, wts (t, topk). k % 4 == 0, rows
// 16-byte aligned, e <= 256, topk <= 32.
extern "C" __global__ void rows_router(const float *__restrict__ x, const float *__restrict__ w,
                                       const float *__restrict__ b, const uint32_t k,
                                       const uint32_t e, float *__restrict__ logits,
                                       const uint32_t topk, uint32_t *__restrict__ ids,
                                       float *__restrict__ wts) {
    const uint32_t row = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t nw = blockDim.x >> 5;
    const float4 *x4 = (const float4 *)(x + (uint64_t)row * k);
    float *lg = logits + (uint64_t)row * e;
    for (uint32_t j = warp; j < e; j += nw) {
        const float4 *w4 = (const float4 *)(w + (uint64_t)j * k);
        float acc = 0.f;
        for (uint32_t c = lane; c < k / 4; c += 32) {
            const float4 a = __ldg(w4 + c), v = __ldg(x4 + c);
            acc += a.x * v.x + a.y * v.y + a.z * v.z + a.w * v.w;
        }
        acc = warp_sum(acc);
        if (lane == 0) lg[j] = acc + b[j];
    }
    // route_topk reads the logits through L2 (ld.global.cg): the block's stores reach it first.
    __threadfence();
    __syncthreads();
    if (warp == 0) {
        route_topk(lg, e, topk, lane, ids + (uint64_t)row * topk, wts + (uint64_t)row * topk);
    }
}

// Router logits = W x + b (W f32 (e, k)): one block per expert row, then the ranking of
// router_row_rank.
extern "C" __global__ void dec_router(const float *__restrict__ x, const float *__restrict__ w,
                                      const float *__restrict__ b, const uint32_t k,
                                      float *__restrict__ logits, const uint32_t topk,
                                      uint32_t *__restrict__ ids, float *__restrict__ wts,
                                      uint32_t *__restrict__ counter) {
    __shared__ float red[32];
    pdl_begin();
    router_row_rank(x, w, b, k, logits, topk, ids, wts, counter, red);
}

// The MLP's RMSNorm fused with the router, one block per expert row (grid e <= 256, block 256):
// each block normalizes x itself, y = x * rsqrt(mean(x^2) + eps) * nw (block 0 writes y to xn
// if not null), its warps quantize their share of y's 32-blocks into (qh, ql, qd), permuted
// (the expert kernels' input), then router_row_rank on y. k <= DEC_MAX_D, k % 32 == 0.
extern "C" __global__ void dec_rmsnorm_router(
    const float *__restrict__ x, const float *__restrict__ nw_, const float eps, const uint32_t k,
    float *__restrict__ xn, int8_t *__restrict__ qh, int8_t *__restrict__ ql,
    float *__restrict__ qd, const float *__restrict__ w, const float *__restrict__ b,
    float *__restrict__ logits, const uint32_t topk, uint32_t *__restrict__ ids,
    float *__restrict__ wts, uint32_t *__restrict__ counter) {
    __shared__ __align__(16) float sx[DEC_MAX_D];
    __shared__ float red[32];
    const uint32_t r = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t nw = blockDim.x >> 5;
    pdl_begin();
    const float scale = block_rms_load(x, sx, k, eps, red);
    for (uint32_t i = tid; i < k; i += blockDim.x) {
        const float v = sx[i] * scale * nw_[i];
        sx[i] = v;
        if (xn && r == 0) xn[i] = v;
    }
    __syncthreads();
    for (uint32_t bq = r * nw + warp; bq < k / 32; bq += gridDim.x * nw) {
        quant_block(sx[bq * 32 + lane], lane, 1, bq, qh, ql, qd);
    }
    router_row_rank(sx, w, b, k, logits, topk, ids, wts, counter, red);
}

// Partial dot of row `row` of planar MXFP4 experts (k columns) with a permuted quantized x,
// over the blocks b = gl, gl + nl, ... (lane gl of a group of nl lanes). Loads are issued four
// blocks at a time before any arithmetic, to keep more bytes in flight.
__device__ __forceinline__ float mx_row_part(const uint8_t *__restrict__ qs,
                                             const uint8_t *__restrict__ e8, uint64_t row,
                                             uint32_t k, const int8_t *__restrict__ xh,
                                             const int8_t *__restrict__ xl,
                                             const float *__restrict__ xd, uint32_t gl,
                                             uint32_t nl) {
    const uint4 *w4 = (const uint4 *)(qs + row * (k / 2));
    const uint8_t *er = e8 + row * (k / 32);
    const uint32_t nb = k / 32;
    float acc = 0.f;
    for (uint32_t b0 = gl; b0 < nb; b0 += 4 * nl) {
        uint4 w[4];
        uint8_t e[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t b = b0 + i * nl;
            if (b < nb) {
                w[i] = __ldg(w4 + b);
                e[i] = __ldg(er + b);
            }
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t b = b0 + i * nl;
            if (b < nb) acc += mx_block_dot(w[i], e[i], xh + b * 32, xl + b * 32, __ldg(xd + b));
        }
    }
    return acc;
}

// Sum over aligned groups of `nl` lanes (a power of two).
__device__ __forceinline__ float group_sum(float v, uint32_t nl) {
    for (uint32_t off = nl / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// MoE gate and up projections of the chosen experts (ids from the router), biases and
// SwiGLU-OAI fused: act[slot, j] = swiglu(gate_e[j] . x + gb[e, j], up_e[j] . x + ub[e, j]),
// e = ids[slot]. Grid (ceil(n / DEC_WARPS), topk); one warp per (slot, j): lanes 0-15 take the
// gate row, 16-31 the up row. x quantized permuted.
extern "C" __global__ void dec_moe_gate_up(
    const uint8_t *__restrict__ gq, const uint8_t *__restrict__ ge, const float *__restrict__ gb,
    const uint8_t *__restrict__ uq, const uint8_t *__restrict__ ue, const float *__restrict__ ub,
    const int8_t *__restrict__ xh, const int8_t *__restrict__ xl, const float *__restrict__ xd,
    const uint32_t *__restrict__ ids, const uint32_t n, const uint32_t k, const float alpha,
    const float limit, float *__restrict__ act) {
    const uint32_t lane = threadIdx.x & 31;
    const uint32_t j = blockIdx.x * DEC_WARPS + (threadIdx.x >> 5);
    const uint32_t slot = blockIdx.y;
    pdl_begin();
    if (j >= n) return;
    const uint64_t row = (uint64_t)ids[slot] * n + j;
    const bool is_up = lane >= 16;
    float v = mx_row_part(is_up ? uq : gq, is_up ? ue : ge, row, k, xh, xl, xd, lane & 15, 16);
    v = group_sum(v, 16);
    const float ud = __shfl_sync(0xffffffffu, v, 16);
    if (lane != 0) return;
    act[(uint64_t)slot * n + j] = swiglu_oai(v + gb[row], ud + ub[row], alpha, limit);
}

// MoE down projection of the chosen experts, bias, routing weights and residual fused:
// h[j] += sum_slot wts[slot] * (down_e[j] . act[slot] + db[e, j]). act quantized permuted,
// (topk, k). One warp per j, its lanes split into groups of 32 / next_pow2(topk), one slot each.
extern "C" __global__ void dec_moe_down(
    const uint8_t *__restrict__ dq, const uint8_t *__restrict__ de, const float *__restrict__ db,
    const int8_t *__restrict__ xh, const int8_t *__restrict__ xl, const float *__restrict__ xd,
    const uint32_t *__restrict__ ids, const float *__restrict__ wts, const uint32_t topk,
    const uint32_t n, const uint32_t k, float *__restrict__ h) {
    const uint32_t lane = threadIdx.x & 31;
    const uint32_t j = blockIdx.x * DEC_WARPS + (threadIdx.x >> 5);
    pdl_begin();
    if (j >= n) return;
    uint32_t groups = 1;
    while (groups < topk) groups <<= 1;
    const uint32_t nl = 32 / groups, s = lane / nl;
    float v = 0.f;
    uint64_t row = 0;
    if (s < topk) {
        row = (uint64_t)ids[s] * n + j;
        const uint64_t xo = (uint64_t)s * k;
        v = mx_row_part(dq, de, row, k, xh + xo, xl + xo, xd + xo / 32, lane % nl, nl);
    }
    v = group_sum(v, nl);
    // Lane s * nl holds slot s's dot; add bias and weight there, then sum the slots in order.
    if (s < topk && lane % nl == 0) v = wts[s] * (v + db[row]);
    float out = 0.f;
    for (uint32_t t = 0; t < topk; ++t) out += __shfl_sync(0xffffffffu, v, t * nl);
    if (lane == 0) h[j] += out;
}

// Expert blocks a lane holds in registers in the row kernels below: k / 32 <= 8 * 16 (gate/up,
// 16 lanes per row) and 4 * 32 (down, 32 lanes per row), k <= 4096.
#define DEC_ROWS_MAXB 8

// One row (`row` of planar MXFP4 experts, k columns) as blocks b = gl + nl i, held by lane gl
// of a group of nl lanes: w[i], e[i] for i < maxb (zeros past the end).
template <int MAXB>
__device__ __forceinline__ void mx_row_load(const uint8_t *__restrict__ qs,
                                            const uint8_t *__restrict__ e8, uint64_t row,
                                            uint32_t k, uint32_t gl, uint32_t nl, uint4 *w,
                                            uint8_t *e) {
    const uint4 *w4 = (const uint4 *)(qs + row * (k / 2));
    const uint8_t *er = e8 + row * (k / 32);
    const uint32_t nb = k / 32;
#pragma unroll
    for (int i = 0; i < MAXB; ++i) {
        const uint32_t b = gl + i * nl;
        w[i] = b < nb ? __ldg(w4 + b) : make_uint4(0, 0, 0, 0);
        e[i] = b < nb ? __ldg(er + b) : 0;
    }
}

// The held row's partial dot with a permuted quantized x (k values at xh, xl; scales xd).
template <int MAXB>
__device__ __forceinline__ float mx_held_dot(const uint4 *w, const uint8_t *e, uint32_t k,
                                             const int8_t *__restrict__ xh,
                                             const int8_t *__restrict__ xl,
                                             const float *__restrict__ xd, uint32_t gl,
                                             uint32_t nl) {
    const uint32_t nb = k / 32;
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < MAXB; ++i) {
        const uint32_t b = gl + i * nl;
        if (b < nb) acc += mx_block_dot(w[i], e[i], xh + b * 32, xl + b * 32, __ldg(xd + b));
    }
    return acc;
}

// MoE gate and up projections for few slots per expert (the batched decode), biases and
// SwiGLU-OAI fused, over a grouped plan (tiles (expert, first slot, group end) of at most 64
// slots, as prefill_gemm.cu's pg_route builds them): act[s, j] = swiglu(gate_e[j] . x_r +
// gb[e, j], up_e[j] . x_r + ub[e, j]) with r = row_map[s]. Grid (ceil(n / DEC_WARPS), tiles);
// one warp per row j of the tile's expert, its weights read once into registers (lanes 0-15
// the gate row, 16-31 the up row) and multiplied with every slot of the tile. x quantized
// permuted, (rows, k). k <= 4096.
extern "C" __global__ void dec_moe_rows_gate_up(
    const uint8_t *__restrict__ gq, const uint8_t *__restrict__ ge, const float *__restrict__ gb,
    const uint8_t *__restrict__ uq, const uint8_t *__restrict__ ue, const float *__restrict__ ub,
    const int8_t *__restrict__ xh, const int8_t *__restrict__ xl, const float *__restrict__ xd,
    const uint32_t *__restrict__ row_map, const uint32_t *__restrict__ tiles, const uint32_t n,
    const uint32_t k, const float alpha, const float limit, float *__restrict__ act) {
    const uint32_t lane = threadIdx.x & 31;
    const uint32_t j = blockIdx.x * DEC_WARPS + (threadIdx.x >> 5);
    const uint32_t e = tiles[3 * blockIdx.y], m0 = tiles[3 * blockIdx.y + 1];
    const uint32_t end = min(m0 + 64u, tiles[3 * blockIdx.y + 2]);
    if (j >= n || m0 >= end) return;
    const uint64_t row = (uint64_t)e * n + j;
    const bool is_up = lane >= 16;
    const uint32_t gl = lane & 15;
    uint4 w[DEC_ROWS_MAXB];
    uint8_t ex[DEC_ROWS_MAXB];
    mx_row_load<DEC_ROWS_MAXB>(is_up ? uq : gq, is_up ? ue : ge, row, k, gl, 16, w, ex);
    const float bg = gb[row], bu = ub[row];
    for (uint32_t s = m0; s < end; ++s) {
        const uint64_t xo = (uint64_t)row_map[s] * k;
        float v = mx_held_dot<DEC_ROWS_MAXB>(w, ex, k, xh + xo, xl + xo, xd + xo / 32, gl, 16);
        v = group_sum(v, 16);
        const float ud = __shfl_sync(0xffffffffu, v, 16);
        if (lane == 0) act[(uint64_t)s * n + j] = swiglu_oai(v + bg, ud + bu, alpha, limit);
    }
}

// MoE down projection for few slots per expert: y[s, j] = down_e[j] . act[s] + db[e, j] over
// the same plan (slot s reads row s of act, quantized permuted, (slots, k)). Grid
// (ceil(n / DEC_WARPS), tiles); one warp per row j, all 32 lanes on it. k <= 4096.
extern "C" __global__ void dec_moe_rows_down(
    const uint8_t *__restrict__ dq, const uint8_t *__restrict__ de, const float *__restrict__ db,
    const int8_t *__restrict__ xh, const int8_t *__restrict__ xl, const float *__restrict__ xd,
    const uint32_t *__restrict__ tiles, const uint32_t n, const uint32_t k,
    float *__restrict__ y) {
    const uint32_t lane = threadIdx.x & 31;
    const uint32_t j = blockIdx.x * DEC_WARPS + (threadIdx.x >> 5);
    const uint32_t e = tiles[3 * blockIdx.y], m0 = tiles[3 * blockIdx.y + 1];
    const uint32_t end = min(m0 + 64u, tiles[3 * blockIdx.y + 2]);
    if (j >= n || m0 >= end) return;
    const uint64_t row = (uint64_t)e * n + j;
    uint4 w[DEC_ROWS_MAXB / 2];
    uint8_t ex[DEC_ROWS_MAXB / 2];
    mx_row_load<DEC_ROWS_MAXB / 2>(dq, de, row, k, lane, 32, w, ex);
    const float b = db[row];
    for (uint32_t s = m0; s < end; ++s) {
        const uint64_t xo = (uint64_t)s * k;
        float v = mx_held_dot<DEC_ROWS_MAXB / 2>(w, ex, k, xh + xo, xl + xo, xd + xo / 32, lane, 32);
        v = warp_sum(v);
        if (lane == 0) y[(uint64_t)s * n + j] = v + b;
    }
}

// ggml Q8_0 blocks (f16 d, 32 int8) to a split matrix: qs (nblocks * 32) int8, d (nblocks) f32.
extern "C" __global__ void dec_q8_0_split(const uint8_t *__restrict__ src, const uint64_t nblocks,
                                          int8_t *__restrict__ qs, float *__restrict__ d) {
    pdl_wait();
    const uint64_t b = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= nblocks) return;
    const uint8_t *s = src + b * 34;
    d[b] = __half2float(__ushort_as_half((uint16_t)(s[0] | (s[1] << 8))));
    for (int i = 0; i < 32; ++i) qs[b * 32 + i] = (int8_t)s[2 + i];
}

// ggml MXFP4 blocks (e8, 16 nibble bytes) to planar: qs (nblocks * 16), e8 (nblocks).
extern "C" __global__ void dec_mxfp4_planar(const uint8_t *__restrict__ src, const uint64_t nblocks,
                                            uint8_t *__restrict__ qs, uint8_t *__restrict__ e8) {
    pdl_wait();
    const uint64_t b = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= nblocks) return;
    const uint8_t *s = src + b * MXFP4_BLOCK_BYTES;
    e8[b] = s[0];
    for (int i = 0; i < 16; ++i) qs[b * 16 + i] = s[1 + i];
}

// Planar MXFP4 (qs (nblocks * 16), e8 (nblocks)) back to ggml blocks (nblocks * 17 bytes).
extern "C" __global__ void dec_mxfp4_unplanar(const uint8_t *__restrict__ qs,
                                              const uint8_t *__restrict__ e8, const uint64_t nblocks,
                                              uint8_t *__restrict__ dst) {
    pdl_wait();
    const uint64_t b = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= nblocks) return;
    uint8_t *d = dst + b * MXFP4_BLOCK_BYTES;
    d[0] = e8[b];
    for (int i = 0; i < 16; ++i) d[1 + i] = qs[b * 16 + i];
}
