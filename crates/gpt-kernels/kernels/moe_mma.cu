// The MoE experts for few slots per expert (a batched decode step) on int8 tensor cores, with
// the weights as the MMA's 16-row side and the slots as its 8-column side: one
// mma.m16n8k32 multiplies 16 rows of an expert by one 32-block of 8 slots' activations, so a
// group of ~8 slots wastes no MMA work (the prefill's tiles pad every group to 64 slots) and
// each weight is read and decoded once for all of its expert's slots (the dp4a row kernels
// decode it again for every slot).
//
// Same contract and numbers as decode.cu's dec_moe_rows_* (same planar MXFP4 weights, same
// grouped plan, same activations quantized permuted into two int8 planes), in another order of
// summation. Per 32-block, with g = lane / 4 and t = lane % 4: lane (g, t) holds bytes 4t..4t+4
// of rows g and g + 8 of the block's 16 nibble bytes; mx_lut4 of their low half is A's k
// columns 4t..4t+4 and of the high half 16+4t..16+4t+4, which are the permuted positions
// 8t..8t+8 (decode.cu's perm_pos): B's columns for slot g are that one 8-byte run of its
// permuted row. Each block's hi and lo planes are two MMAs whose int32 results are scaled by
// the row's 2^(e-128) and the slot's d into f32 accumulators.
#include <stdint.h>
#include "mma.cuh"
#include "mxfp4.cuh"
#include "swiglu.cuh"

#define MM_WARPS 4  // warps per block, 16 consecutive weight rows each
#define MM_NT 4     // 8-slot column tiles a warp accumulates at once; more slots loop
#define MM_TILE 64  // slots per tile of the plan (prefill_gemm.cu's PG_BM)
#define MM_U 4      // 32-blocks of weights loaded ahead

// Rows `r0 .. r0 + 16` of MATS matrices (planar MXFP4 q, e8: (experts, n, k/2), (experts, n,
// k/32); biases b (experts, n)) for the slots of plan tile blockIdx.y; slot s reads activation
// row row_map[s] (or s when row_map is null) of xh, xl (rows, k) permuted, xd (rows, k/32).
// y[s, row] = the dot + bias, or with MATS = 2 swiglu(gate + bias, up + bias).
template <int MATS>
__device__ __forceinline__ void mm_rows(const uint8_t *const *q, const uint8_t *const *e8,
                                        const float *const *bias, const int8_t *__restrict__ xh,
                                        const int8_t *__restrict__ xl, const float *__restrict__ xd,
                                        const uint32_t *__restrict__ row_map,
                                        const uint32_t *__restrict__ tiles, const uint32_t n,
                                        const uint32_t k, const float alpha, const float limit,
                                        float *__restrict__ y) {
    const uint32_t lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint32_t r0 = (blockIdx.x * MM_WARPS + (threadIdx.x >> 5)) * 16;
    const uint32_t ex = tiles[3 * blockIdx.y], m0 = tiles[3 * blockIdx.y + 1];
    const uint32_t end = min(m0 + MM_TILE, tiles[3 * blockIdx.y + 2]);
    if (r0 >= n || m0 >= end) return;  // uniform per warp: the MMAs below need all lanes
    const uint32_t nb = k / 32;
    // This lane's two weight rows (clamped into the matrix; rows past n are computed, not stored).
    const uint32_t ra = r0 + g, rb = r0 + g + 8;
    const uint64_t ga = (uint64_t)ex * n + min(ra, n - 1), gb = (uint64_t)ex * n + min(rb, n - 1);
    const uint32_t *wa[MATS], *wb[MATS];
    const uint8_t *ea[MATS], *eb[MATS];
#pragma unroll
    for (int m = 0; m < MATS; m++) {
        wa[m] = (const uint32_t *)(q[m] + ga * (k / 2)) + t;
        wb[m] = (const uint32_t *)(q[m] + gb * (k / 2)) + t;
        ea[m] = e8[m] + ga * nb;
        eb[m] = e8[m] + gb * nb;
    }
    for (uint32_t s0 = m0; s0 < end; s0 += 8 * MM_NT) {
        const uint32_t nt = min((uint32_t)MM_NT, (end - s0 + 7) / 8);
        // Activation rows: B's column g of each column tile, and the scale rows of this lane's
        // accumulator columns 2t, 2t + 1 (slots past the group read the first slot's row).
        auto src = [&](uint32_t s) -> uint64_t {
            s = s < end ? s : s0;
            return row_map ? row_map[s] : s;
        };
        uint64_t xb[MM_NT], xs0[MM_NT], xs1[MM_NT];
#pragma unroll
        for (int j = 0; j < MM_NT; j++) {
            const uint32_t sb = s0 + 8 * j + g, sc = s0 + 8 * j + 2 * t;
            xb[j] = src(sb) * k + 8 * t;
            xs0[j] = src(sc) * nb;
            xs1[j] = src(sc + 1) * nb;
        }
        float acc[MATS][MM_NT][4];
#pragma unroll
        for (int m = 0; m < MATS; m++)
#pragma unroll
            for (int j = 0; j < MM_NT; j++)
#pragma unroll
                for (int c = 0; c < 4; c++) acc[m][j][c] = 0.f;
        for (uint32_t kb0 = 0; kb0 < nb; kb0 += MM_U) {
            // MM_U blocks of both rows' weights in flight before any is used.
            uint32_t qa[MM_U][MATS], qb[MM_U][MATS];
            uint8_t xa[MM_U][MATS], xb2[MM_U][MATS];
#pragma unroll
            for (int u = 0; u < MM_U; u++)
#pragma unroll
                for (int m = 0; m < MATS; m++) {
                    const uint32_t kb = min(kb0 + u, nb - 1);
                    qa[u][m] = __ldg(wa[m] + 4 * kb);
                    qb[u][m] = __ldg(wb[m] + 4 * kb);
                    xa[u][m] = __ldg(ea[m] + kb);
                    xb2[u][m] = __ldg(eb[m] + kb);
                }
#pragma unroll
            for (int u = 0; u < MM_U; u++) {
                const uint32_t kb = kb0 + u;
                if (kb >= nb) break;  // uniform
                int a[MATS][4];
                float sa[MATS], sb[MATS];
#pragma unroll
                for (int m = 0; m < MATS; m++) {
                    a[m][0] = mx_lut4(qa[u][m]);
                    a[m][1] = mx_lut4(qb[u][m]);
                    a[m][2] = mx_lut4(qa[u][m] >> 16);
                    a[m][3] = mx_lut4(qb[u][m] >> 16);
                    sa[m] = mxfp4_scale(xa[u][m]);
                    sb[m] = mxfp4_scale(xb2[u][m]);
                }
#pragma unroll
                for (int j = 0; j < MM_NT; j++) {
                    if (j >= nt) break;  // uniform per warp
                    const uint2 h = __ldg((const uint2 *)(xh + xb[j] + kb * 32));
                    const uint2 l = __ldg((const uint2 *)(xl + xb[j] + kb * 32));
                    const float d0 = __ldg(xd + xs0[j] + kb), d1 = __ldg(xd + xs1[j] + kb);
#pragma unroll
                    for (int m = 0; m < MATS; m++) {
                        int ch[4] = {MM_MAGIC, MM_MAGIC, MM_MAGIC, MM_MAGIC};
                        int cl[4] = {MM_MAGIC, MM_MAGIC, MM_MAGIC, MM_MAGIC};
                        mma_s8(ch, a[m], (int)h.x, (int)h.y);
                        mma_s8(cl, a[m], (int)l.x, (int)l.y);
#pragma unroll
                        for (int c = 0; c < 4; c++) {
                            const float fh = __int_as_float(ch[c]) - MM_MAGIC_F;
                            const float fl = __int_as_float(cl[c]) - MM_MAGIC_F;
                            const float sc = (c < 2 ? sa[m] : sb[m]) * ((c & 1) ? d1 : d0);
                            acc[m][j][c] = fmaf(fmaf(fh, 128.f, fl), sc, acc[m][j][c]);
                        }
                    }
                }
            }
        }
#pragma unroll
        for (int j = 0; j < MM_NT; j++) {
            if (j >= nt) break;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const uint32_t s = s0 + 8 * j + 2 * t + (c & 1), row = c < 2 ? ra : rb;
                if (s >= end || row >= n) continue;
                const uint64_t bo = (uint64_t)ex * n + row;
                float v = acc[0][j][c] + bias[0][bo];
                if (MATS == 2) v = swiglu_oai(v, acc[MATS - 1][j][c] + bias[MATS - 1][bo], alpha, limit);
                y[(uint64_t)s * n + row] = v;
            }
        }
    }
}

// Gate and up with SwiGLU-OAI: act[s, j] = swiglu(gate_e[j] . x_r + gb[e, j], up_e[j] . x_r +
// ub[e, j]), r = row_map[s]; the parameters of decode.cu's dec_moe_rows_gate_up. Grid
// (ceil(n / (16 MM_WARPS)), tiles), 32 MM_WARPS threads. k % 32 == 0.
extern "C" __global__ void __launch_bounds__(32 * MM_WARPS) mm_moe_gate_up(
    const uint8_t *__restrict__ gq, const uint8_t *__restrict__ ge, const float *__restrict__ gb,
    const uint8_t *__restrict__ uq, const uint8_t *__restrict__ ue, const float *__restrict__ ub,
    const int8_t *__restrict__ xh, const int8_t *__restrict__ xl, const float *__restrict__ xd,
    const uint32_t *__restrict__ row_map, const uint32_t *__restrict__ tiles, const uint32_t n,
    const uint32_t k, const float alpha, const float limit, float *__restrict__ act) {
    const uint8_t *q[2] = {gq, uq}, *e8[2] = {ge, ue};
    const float *b[2] = {gb, ub};
    mm_rows<2>(q, e8, b, xh, xl, xd, row_map, tiles, n, k, alpha, limit, act);
}

// Down: y[s, j] = down_e[j] . act[s] + db[e, j]; the parameters of dec_moe_rows_down. Grid and
// block as mm_moe_gate_up.
extern "C" __global__ void __launch_bounds__(32 * MM_WARPS) mm_moe_down(
    const uint8_t *__restrict__ dq, const uint8_t *__restrict__ de, const float *__restrict__ db,
    const int8_t *__restrict__ xh, const int8_t *__restrict__ xl, const float *__restrict__ xd,
    const uint32_t *__restrict__ tiles, const uint32_t n, const uint32_t k, float *__restrict__ y) {
    const uint8_t *q[1] = {dq}, *e8[1] = {de};
    const float *b[1] = {db};
    mm_rows<1>(q, e8, b, xh, xl, xd, nullptr, tiles, n, k, 0.f, 0.f, y);
}
