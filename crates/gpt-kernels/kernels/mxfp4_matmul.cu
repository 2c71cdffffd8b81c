// f32 activations x MXFP4 weights -> f32: a dense matmul (decode GEMV shape) and the MoE
// expert matmul. One warp computes one output element, reading its weight row once with
// coalesced loads (see warp_mxfp4_row_dot).
#include "mxfp4.cuh"

#define WARPS_PER_BLOCK 4

// Dot product of one MXFP4 weight row (nb blocks at `row`) with x (nb * 32 floats), by one
// full warp. Each pass covers 4 blocks: lane l reads qs bytes 2s and 2s+1 (s = l % 8) of block
// l / 8 and the matching 4 activations, so the warp's loads of weights and of x are both
// contiguous (ncu on the first version, which gave each lane a whole block, showed L1-bound
// strided x reads at 3% of DRAM bandwidth). Result valid in all lanes.
__device__ float warp_mxfp4_row_dot(const uint8_t *__restrict__ row, uint32_t nb,
                                    const float *__restrict__ x) {
    const uint32_t lane = threadIdx.x & 31;
    const uint32_t sub = lane & 7;
    float acc = 0.f;
#pragma unroll 4
    for (uint32_t b = lane >> 3; b < nb; b += 4) {
        const uint8_t *blk = row + (uint64_t)b * MXFP4_BLOCK_BYTES;
        const float d = mxfp4_scale(__ldg(blk));
        const uint32_t q0 = __ldg(blk + 1 + 2 * sub);
        const uint32_t q1 = __ldg(blk + 2 + 2 * sub);
        const float *xb = x + (uint64_t)b * MXFP4_BLOCK_ELEMS + 2 * sub;
        float s = mxfp4_kv(q0 & 0x0f) * __ldg(xb);
        s += mxfp4_kv(q1 & 0x0f) * __ldg(xb + 1);
        s += mxfp4_kv(q0 >> 4) * __ldg(xb + 16);
        s += mxfp4_kv(q1 >> 4) * __ldg(xb + 17);
        acc += s * d;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        acc += __shfl_xor_sync(0xffffffffu, acc, off);
    }
    return acc;
}

// y (m, n) = x (m, k) . W^T + bias, W: U8 (n, k/32*17), bias: f32 (n) or null.
// Grid: (ceil(n / WARPS_PER_BLOCK), min(m, 65535)); block: 32 * WARPS_PER_BLOCK threads.
extern "C" __global__ void mxfp4_matmul_f32(const float *__restrict__ x,
                                            const uint8_t *__restrict__ w, const uint64_t w_len,
                                            const float *__restrict__ bias,
                                            float *__restrict__ y, const uint32_t m,
                                            const uint32_t n, const uint32_t k) {
    const uint32_t warp = threadIdx.x >> 5;
    const uint32_t col = blockIdx.x * WARPS_PER_BLOCK + warp;
    if (col >= n) {
        return;
    }
    const uint32_t nb = k / MXFP4_BLOCK_ELEMS;
    const uint8_t *row = w + (uint64_t)col * nb * MXFP4_BLOCK_BYTES;
    for (uint32_t r = blockIdx.y; r < m; r += gridDim.y) {
        const float d = warp_mxfp4_row_dot(row, nb, x + (uint64_t)r * k);
        if ((threadIdx.x & 31) == 0) {
            y[(uint64_t)r * n + col] = d + (bias ? bias[col] : 0.f);
        }
    }
}

// MoE: for each slot p = (token t, choice j) with expert e = ids[p]:
//   y[p, :] = x_row . W[e]^T + bias[e]
// x: f32 (tokens, k) (x_per_slot = 0) or (tokens * top_k, k) (x_per_slot = 1);
// W: U8 (n_experts, n, k/32*17); bias: f32 (n_experts, n) or null; ids: u32 (tokens * top_k);
// y: f32 (tokens * top_k, n). An id >= n_experts yields NaN outputs for that slot.
// Grid: (ceil(n / WARPS_PER_BLOCK), min(slots, 65535)); block: 32 * WARPS_PER_BLOCK threads.
extern "C" __global__ void mxfp4_moe_matmul_f32(
    const float *__restrict__ x, const uint8_t *__restrict__ w, const uint64_t w_len,
    const float *__restrict__ bias, const uint32_t *__restrict__ ids, float *__restrict__ y,
    const uint32_t slots, const uint32_t top_k, const uint32_t x_per_slot,
    const uint32_t n_experts, const uint32_t n, const uint32_t k) {
    const uint32_t warp = threadIdx.x >> 5;
    const uint32_t col = blockIdx.x * WARPS_PER_BLOCK + warp;
    if (col >= n) {
        return;
    }
    const uint32_t nb = k / MXFP4_BLOCK_ELEMS;
    for (uint32_t p = blockIdx.y; p < slots; p += gridDim.y) {
        const uint32_t e = ids[p];
        float d;
        if (e >= n_experts) {
            d = __int_as_float(0x7fc00000);
        } else {
            const uint64_t row_index = (uint64_t)e * n + col;
            const uint8_t *row = w + row_index * nb * MXFP4_BLOCK_BYTES;
            const uint64_t xr = x_per_slot ? p : p / top_k;
            d = warp_mxfp4_row_dot(row, nb, x + xr * k);
            d += bias ? bias[row_index] : 0.f;
        }
        if ((threadIdx.x & 31) == 0) {
            y[(uint64_t)p * n + col] = d;
        }
    }
}
