// Flash-style prefill attention with sinks (GPT-OSS), f32, same contract as attention.cu:
// query i at absolute position p = q_offset + i sees key j (at kv_offset + j) iff
// kv_offset + j <= p and (window == 0 or p - (kv_offset + j) < window); the head's sink S_h
// joins the softmax denominator as a logit with no value; a row with no visible key is 0.
//
// A block takes PF_POS consecutive query positions of one batch row and one KV head, i.e.
// PF_POS x G query rows (the G = hq / hkv heads that share the KV head), and walks the keys any
// of them can see in tiles of 32, each staged in shared memory once for all of its rows (the
// per-row kernel re-read every key for every row). Warp w owns position i0 + w and its G heads:
// lane j scores tile key j against each head, an online softmax per head (seeded with the sink:
// m = S_h, l = 1) updates, and each lane accumulates output dims lane and lane + 32.
// Supports d in {32, 64} and G <= PF_MAX_G; the launcher uses attention.cu otherwise.
#include <stdint.h>
#include "warp.cuh"

#define PF_POS 8
#define PF_MAX_G 8
#define PF_D 64
#define PF_KSTRIDE (PF_D + 4) // 16-byte rows that spread a quarter-warp over all banks

// q, out: f32 (b, t, hq, d); k, v: f32 (b, s, hkv, d); sinks: f32 (hq); all contiguous.
// Grid: (ceil(t / PF_POS), hkv, b); block: 32 * PF_POS threads.
extern "C" __global__ void attention_prefill_f32(
    const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
    const float *__restrict__ sinks, float *__restrict__ out, const uint32_t b, const uint32_t t,
    const uint32_t s, const uint32_t hq, const uint32_t hkv, const uint32_t d, const float scale,
    const uint32_t window, const uint32_t q_offset, const uint32_t kv_offset) {
    __shared__ __align__(16) float ks[32][PF_KSTRIDE];
    __shared__ __align__(16) float vs[32][PF_D];
    __shared__ __align__(16) float qsh[PF_POS][PF_MAX_G][PF_D];
    const uint32_t tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const uint32_t G = hq / hkv, kvh = blockIdx.y, bi = blockIdx.z;
    const uint32_t i0 = blockIdx.x * PF_POS, i = i0 + w;
    const bool active = i < t;
    const int64_t p = (int64_t)q_offset + i;

    for (uint32_t idx = tid; idx < PF_POS * G * d; idx += blockDim.x) {
        const uint32_t pw = idx / (G * d), g = (idx / d) % G, c = idx % d;
        const uint32_t ii = i0 + pw;
        qsh[pw][g][c] =
            ii < t ? q[(((uint64_t)bi * t + ii) * hq + kvh * G + g) * d + c] * scale : 0.f;
    }
    float m[PF_MAX_G], l[PF_MAX_G], acc0[PF_MAX_G], acc1[PF_MAX_G];
#pragma unroll
    for (int g = 0; g < PF_MAX_G; ++g) {
        m[g] = g < (int)G ? sinks[kvh * G + g] : 0.f;
        l[g] = 1.f;
        acc0[g] = 0.f;
        acc1[g] = 0.f;
    }

    const uint32_t i_last = (i0 + PF_POS < t ? i0 + PF_POS : t) - 1;
    int64_t hi = (int64_t)q_offset + i_last - (int64_t)kv_offset;
    if (hi > (int64_t)s - 1) hi = (int64_t)s - 1;
    int64_t lo = window ? (int64_t)q_offset + i0 - (int64_t)window + 1 - (int64_t)kv_offset : 0;
    if (lo < 0) lo = 0;
    const uint32_t d4 = d / 4;

    for (int64_t j0 = lo; j0 <= hi; j0 += 32) {
        __syncthreads();
        for (uint32_t idx = tid; idx < 32 * d4; idx += blockDim.x) {
            const uint32_t r = idx / d4, c = (idx % d4) * 4;
            const int64_t j = j0 + r;
            float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
            if (j <= hi) {
                const uint64_t off = (((uint64_t)bi * s + (uint64_t)j) * hkv + kvh) * d + c;
                kv = *(const float4 *)(k + off);
                vv = *(const float4 *)(v + off);
            }
            *(float4 *)&ks[r][c] = kv;
            *(float4 *)&vs[r][c] = vv;
        }
        __syncthreads();
        if (!active) continue;
        const int64_t ja = (int64_t)kv_offset + j0 + lane;
        const bool valid = j0 + lane <= hi && ja <= p && (window == 0 || p - ja < (int64_t)window);
        float sc[PF_MAX_G];
#pragma unroll
        for (int g = 0; g < PF_MAX_G; ++g) sc[g] = 0.f;
        for (uint32_t c = 0; c < d; c += 4) {
            const float4 kk = *(const float4 *)&ks[lane][c];
#pragma unroll
            for (int g = 0; g < PF_MAX_G; ++g) {
                if (g < (int)G) {
                    const float4 qq = *(const float4 *)&qsh[w][g][c];
                    sc[g] += qq.x * kk.x + qq.y * kk.y + qq.z * kk.z + qq.w * kk.w;
                }
            }
        }
        float pj[PF_MAX_G];
#pragma unroll
        for (int g = 0; g < PF_MAX_G; ++g) {
            pj[g] = 0.f;
            if (g < (int)G) {
                const float sg = valid ? sc[g] : -INFINITY;
                const float mnew = fmaxf(m[g], warp_max(sg));
                const float corr = expf(m[g] - mnew);
                pj[g] = valid ? expf(sg - mnew) : 0.f;
                l[g] = l[g] * corr + warp_sum(pj[g]);
                acc0[g] *= corr;
                acc1[g] *= corr;
                m[g] = mnew;
            }
        }
        for (uint32_t jj = 0; jj < 32; ++jj) {
            const float v0 = vs[jj][lane];
            const float v1 = d > 32 ? vs[jj][lane + 32] : 0.f;
#pragma unroll
            for (int g = 0; g < PF_MAX_G; ++g) {
                if (g < (int)G) {
                    const float pb = __shfl_sync(0xffffffffu, pj[g], jj);
                    acc0[g] += pb * v0;
                    acc1[g] += pb * v1;
                }
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int g = 0; g < PF_MAX_G; ++g) {
        if (g < (int)G) {
            float *o = out + (((uint64_t)bi * t + i) * hq + kvh * G + g) * d;
            o[lane] = acc0[g] / l[g];
            if (d > 32) o[lane + 32] = acc1[g] / l[g];
        }
    }
}
