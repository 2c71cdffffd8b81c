// Prefill attention with sinks on TF32 tensor cores (mma.sync m16n8k8, f32 accumulation), the
// same masking contract as attention.cu: query i at absolute position p = q_offset + i sees
// key j (at kv_offset + j) iff kv_offset + j <= p and (window == 0 or p - (kv_offset + j) <
// window); the head's sink joins the softmax denominator as a logit with no value; a row with
// no visible key is 0. Inputs are rounded to TF32 (10-bit mantissa) for the two products
// (scores and probabilities times values); softmax runs in f32.
//
// A block owns 128 query rows of one KV head: AT_ROWS / G consecutive positions times the
// G = hq / hkv heads sharing it (row r = position r / G, head r % G), so each 32-key tile of K
// and V is staged in shared memory once for 128 rows. Warp w owns rows 16w .. 16w + 15: its Q
// fragments stay in registers; per key tile it computes S = Q K^T (16 x 32), an online softmax
// per row (seeded with the sink: m = sink, l = 1), and O += P V (16 x 64). The P fragments are
// the S accumulators reused in place: within each 8-key group the k order of the P.V product
// is (0, 2, 4, 6, 1, 3, 5, 7), and V's B fragments are read in that order.
// d == 64; G divides 128.
#include <stdint.h>

#define AT_D 64
#define AT_ROWS 128
#define AT_KEYS 32
#define AT_STRIDE (AT_D + 4)  // floats per staged key row: conflict-free fragment reads
#define AT_LOG2E 1.4426950408889634f

__device__ __forceinline__ uint32_t to_tf32(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}

// c += a (16x8 tf32, row) * b (8x8 tf32, col).
__device__ __forceinline__ void mma_tf32(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// q, out: f32 (b, t, hq, 64); k, v: f32 (b, s, hkv, 64); sinks: f32 (hq); all contiguous.
// Grid: (ceil(t * G / AT_ROWS), hkv, b); 256 threads.
extern "C" __global__ void __launch_bounds__(256) attention_prefill_tf32(
    const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
    const float *__restrict__ sinks, float *__restrict__ out, const uint32_t t, const uint32_t s,
    const uint32_t hq, const uint32_t hkv, const float scale, const uint32_t window,
    const uint32_t q_offset, const uint32_t kv_offset) {
    __shared__ __align__(16) uint32_t ks[AT_KEYS * AT_STRIDE];
    __shared__ __align__(16) uint32_t vs[AT_KEYS * AT_STRIDE];
    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t g = lane >> 2, tig = lane & 3;
    const uint32_t G = hq / hkv, npos = AT_ROWS / G, kvh = blockIdx.y, bi = blockIdx.z;
    const uint32_t i0 = blockIdx.x * npos;

    // This thread's two rows: r = 16 warp + g (+ 8).
    uint32_t ipos[2], head[2];
    bool live[2];
    int64_t pabs[2];
    float m[2], l[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const uint32_t r = warp * 16 + g + 8 * h;
        ipos[h] = i0 + r / G;
        head[h] = kvh * G + r % G;
        live[h] = ipos[h] < t;
        pabs[h] = (int64_t)q_offset + ipos[h];
        m[h] = live[h] ? sinks[head[h]] * AT_LOG2E : 0.f;  // scores are kept in log2 units
        l[h] = 1.f;
    }
    // Q fragments, pre-scaled by scale * log2(e): a0 (g, c), a1 (g + 8, c), a2 (g, c + 4),
    // a3 (g + 8, c + 4) for c = 8 kd + tig.
    uint32_t qa[8][4];
    const float qs = scale * AT_LOG2E;
#pragma unroll
    for (int kd = 0; kd < 8; kd++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const float *qr = q + (((uint64_t)bi * t + ipos[h]) * hq + head[h]) * AT_D + kd * 8 + tig;
            qa[kd][h] = to_tf32(live[h] ? qr[0] * qs : 0.f);
            qa[kd][h + 2] = to_tf32(live[h] ? qr[4] * qs : 0.f);
        }
    }
    float o[8][4];
#pragma unroll
    for (int nd = 0; nd < 8; nd++)
#pragma unroll
        for (int c = 0; c < 4; c++) o[nd][c] = 0.f;

    // Keys any row of the block can see.
    const uint32_t i_last = min(i0 + npos, t) - 1;
    int64_t hi = (int64_t)q_offset + i_last - (int64_t)kv_offset;
    if (hi > (int64_t)s - 1) hi = (int64_t)s - 1;
    int64_t lo = window ? (int64_t)q_offset + i0 - (int64_t)window + 1 - (int64_t)kv_offset : 0;
    if (lo < 0) lo = 0;

    for (int64_t j0 = lo; j0 <= hi; j0 += AT_KEYS) {
        __syncthreads();
        // Stage 32 keys x 64 dims of K and V as TF32: 512 float4 each, 2 per thread.
#pragma unroll
        for (int it = 0; it < 2; it++) {
            const uint32_t idx = tid + it * 256, r = idx >> 4, c = (idx & 15) * 4;
            const int64_t j = j0 + r;
            float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
            if (j <= hi) {
                const uint64_t off = (((uint64_t)bi * s + (uint64_t)j) * hkv + kvh) * AT_D + c;
                kv = *(const float4 *)(k + off);
                vv = *(const float4 *)(v + off);
            }
            *(uint4 *)&ks[r * AT_STRIDE + c] =
                make_uint4(to_tf32(kv.x), to_tf32(kv.y), to_tf32(kv.z), to_tf32(kv.w));
            *(uint4 *)&vs[r * AT_STRIDE + c] =
                make_uint4(to_tf32(vv.x), to_tf32(vv.y), to_tf32(vv.z), to_tf32(vv.w));
        }
        __syncthreads();

        // S = Q K^T: 4 groups of 8 keys; S[nk][c] is row g (c < 2) or g + 8, key 8 nk + 2 tig + (c & 1).
        float sc[4][4];
#pragma unroll
        for (int nk = 0; nk < 4; nk++) {
#pragma unroll
            for (int c = 0; c < 4; c++) sc[nk][c] = 0.f;
#pragma unroll
            for (int kd = 0; kd < 8; kd++) {
                const uint32_t *kr = &ks[(nk * 8 + g) * AT_STRIDE + kd * 8 + tig];
                mma_tf32(sc[nk], qa[kd], kr[0], kr[4]);
            }
        }
        // Online softmax per row (base 2).
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float mx = -INFINITY;
#pragma unroll
            for (int nk = 0; nk < 4; nk++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int64_t ja = (int64_t)kv_offset + j0 + nk * 8 + 2 * tig + e;
                    const bool ok = live[h] && j0 + nk * 8 + 2 * tig + e <= hi && ja <= pabs[h] &&
                                    (window == 0 || pabs[h] - ja < (int64_t)window);
                    float &x = sc[nk][2 * h + e];
                    x = ok ? x : -INFINITY;
                    mx = fmaxf(mx, x);
                }
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mnew = fmaxf(m[h], mx);
            const float corr = exp2f(m[h] - mnew);
            float sum = 0.f;
#pragma unroll
            for (int nk = 0; nk < 4; nk++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float &x = sc[nk][2 * h + e];
                    x = exp2f(x - mnew);  // -inf -> 0
                    sum += x;
                }
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            l[h] = l[h] * corr + sum;
            m[h] = mnew;
#pragma unroll
            for (int nd = 0; nd < 8; nd++) {
                o[nd][2 * h] *= corr;
                o[nd][2 * h + 1] *= corr;
            }
        }
        // O += P V. For key group nk, the A fragment (k = tig, tig + 4) is keys 2 tig and
        // 2 tig + 1: exactly this thread's S accumulators.
#pragma unroll
        for (int nk = 0; nk < 4; nk++) {
            const uint32_t pa[4] = {to_tf32(sc[nk][0]), to_tf32(sc[nk][2]), to_tf32(sc[nk][1]),
                                    to_tf32(sc[nk][3])};
            const uint32_t *v0 = &vs[(nk * 8 + 2 * tig) * AT_STRIDE + g];
#pragma unroll
            for (int nd = 0; nd < 8; nd++) mma_tf32(o[nd], pa, v0[nd * 8], v0[AT_STRIDE + nd * 8]);
        }
    }

#pragma unroll
    for (int h = 0; h < 2; h++) {
        if (!live[h]) continue;
        const float inv = 1.f / l[h];
        float *orow = out + (((uint64_t)bi * t + ipos[h]) * hq + head[h]) * AT_D;
#pragma unroll
        for (int nd = 0; nd < 8; nd++)
            *(float2 *)(orow + nd * 8 + 2 * tig) = make_float2(o[nd][2 * h] * inv, o[nd][2 * h + 1] * inv);
    }
}
