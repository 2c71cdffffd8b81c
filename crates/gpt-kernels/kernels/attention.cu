// Attention with per-head sinks (GPT-OSS), f32, one thread block per (batch, query, head) row:
// its ATT_WARPS warps take interleaved keys, each with its own online softmax, and combine at
// the end (a row's keys are split so long decode rows use the whole chip, not one warp).
//
// Query i sits at absolute position p = q_offset + i; key j at kv_offset + j. Key j is visible
// iff j_abs <= p and (window == 0 or p - j_abs < window). Scores s_j = scale * q.k_j; the
// head's sink S_h joins the softmax denominator as an extra logit with no value:
//   out = sum_j exp(s_j - M) v_j / (sum_j exp(s_j - M) + exp(S_h - M)),  M = max(max_j s_j, S_h).
// A row without visible keys yields 0. GQA: query head h reads kv head h / (hq / hkv).
// Warp 0's online softmax is seeded with the sink (m = S_h, l = 1), the others with (-inf, 0);
// each lane owns d/32 dims of q and acc.
#include <stdint.h>

#define ATT_WARPS 16
#define ATT_MAX_REGS 8 // d <= 32 * ATT_MAX_REGS = 256

// q, out: f32 (b, t, hq, d); k, v: f32 (b, s, hkv, d); sinks: f32 (hq); all contiguous.
// Grid: (b * t * hq); block: 32 * ATT_WARPS threads.
extern "C" __global__ void attention_sinks_f32(
    const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
    const float *__restrict__ sinks, float *__restrict__ out, const uint32_t b, const uint32_t t,
    const uint32_t s, const uint32_t hq, const uint32_t hkv, const uint32_t d, const float scale,
    const uint32_t window, const uint32_t q_offset, const uint32_t kv_offset) {
    __shared__ float sm_m[ATT_WARPS], sm_l[ATT_WARPS];
    __shared__ float sm_acc[ATT_WARPS][32 * ATT_MAX_REGS];
    const uint32_t lane = threadIdx.x & 31;
    const uint32_t warp = threadIdx.x >> 5;
    const uint64_t row = blockIdx.x;
    if (row >= (uint64_t)b * t * hq) {
        return;
    }
    const uint32_t h = (uint32_t)(row % hq);
    const uint64_t bt = row / hq;          // b_index * t + i
    const uint32_t i = (uint32_t)(bt % t);
    const uint64_t bi = bt / t;
    const uint32_t kvh = h / (hq / hkv);

    float qv[ATT_MAX_REGS];
    float acc[ATT_MAX_REGS];
    const float *qp = q + row * d;
#pragma unroll
    for (int r = 0; r < ATT_MAX_REGS; ++r) {
        const uint32_t c = r * 32 + lane;
        qv[r] = c < d ? qp[c] : 0.f;
        acc[r] = 0.f;
    }

    const int64_t p = (int64_t)q_offset + i;
    int64_t j_hi = p - (int64_t)kv_offset; // inclusive
    int64_t j_lo = window ? p - (int64_t)window + 1 - (int64_t)kv_offset : 0;
    if (j_lo < 0) j_lo = 0;
    if (j_hi > (int64_t)s - 1) j_hi = (int64_t)s - 1;

    float m = warp == 0 ? sinks[h] : -INFINITY;
    float l = warp == 0 ? 1.f : 0.f;
    for (int64_t j = j_lo + warp; j <= j_hi; j += ATT_WARPS) {
        const uint64_t kv_row = (bi * s + (uint64_t)j) * hkv + kvh;
        const float *kp = k + kv_row * d;
        const float *vp = v + kv_row * d;
        float part = 0.f;
#pragma unroll
        for (int r = 0; r < ATT_MAX_REGS; ++r) {
            const uint32_t c = r * 32 + lane;
            if (c < d) part += qv[r] * kp[c];
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            part += __shfl_xor_sync(0xffffffffu, part, off);
        }
        const float sc = part * scale;
        float corr, pj;
        if (sc > m) {
            corr = expf(m - sc);
            pj = 1.f;
            m = sc;
        } else {
            corr = 1.f;
            pj = expf(sc - m);
        }
        l = l * corr + pj;
#pragma unroll
        for (int r = 0; r < ATT_MAX_REGS; ++r) {
            const uint32_t c = r * 32 + lane;
            if (c < d) acc[r] = acc[r] * corr + pj * vp[c];
        }
    }
    // Combine the warps: M = max m_w, out = sum_w acc_w e^(m_w - M) / sum_w l_w e^(m_w - M).
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int r = 0; r < ATT_MAX_REGS; ++r) {
        sm_acc[warp][r * 32 + lane] = acc[r];
    }
    __syncthreads();
    if (warp == 0) {
        float mm = sm_m[0];
        for (int w = 1; w < ATT_WARPS; ++w) mm = fmaxf(mm, sm_m[w]);
        float ll = 0.f;
        float f[ATT_WARPS];
#pragma unroll
        for (int w = 0; w < ATT_WARPS; ++w) {
            f[w] = sm_m[w] == -INFINITY ? 0.f : expf(sm_m[w] - mm);
            ll += sm_l[w] * f[w];
        }
        float *op = out + row * d;
#pragma unroll
        for (int r = 0; r < ATT_MAX_REGS; ++r) {
            const uint32_t c = r * 32 + lane;
            if (c < d) {
                float a = 0.f;
#pragma unroll
                for (int w = 0; w < ATT_WARPS; ++w) a += sm_acc[w][c] * f[w];
                op[c] = a / ll;
            }
        }
    }
}
