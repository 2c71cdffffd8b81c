// f32 activations x MXFP4 weights -> f32: a dense matmul (decode GEMV shape) and the MoE
// expert matmul. One warp computes one output element; its weight row is staged through
// shared memory with aligned 16-byte loads, 32 blocks (544 bytes) at a time, and each lane
// then decodes one 17-byte block against 32 activations.
#include "mxfp4.cuh"

#define WARPS_PER_BLOCK 4
#define CHUNK_BLOCKS 32
#define CHUNK_BYTES (CHUNK_BLOCKS * MXFP4_BLOCK_BYTES)
// 544 bytes plus up to 15 bytes of misalignment: 35 vectors, rounded up.
#define STAGE_VECS 36

// Loads the 16-byte vector at aligned address `v` into `dst`, keeping only bytes inside
// [lo, hi) (others read as 0): whole vectors use one 16-byte load, edge vectors byte loads.
__device__ __forceinline__ void load_vec_clipped(const uint8_t *v, const uint8_t *lo,
                                                 const uint8_t *hi, uint4 *dst) {
    if (v >= lo && v + 16 <= hi) {
        *dst = *reinterpret_cast<const uint4 *>(v);
        return;
    }
    __align__(16) uint8_t tmp[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        const uint8_t *p = v + i;
        tmp[i] = (p >= lo && p < hi) ? *p : 0;
    }
    *dst = *reinterpret_cast<const uint4 *>(tmp);
}

// Dot product of one MXFP4 weight row (nb blocks at `row`) with x (nb * 32 floats), by one
// full warp. [lo, hi) is the valid byte range of the weight buffer. Result valid in all lanes.
__device__ float warp_mxfp4_row_dot(const uint8_t *row, uint32_t nb, const float *__restrict__ x,
                                    const uint8_t *lo, const uint8_t *hi, uint4 *stage) {
    const uint32_t lane = threadIdx.x & 31;
    const uint8_t *stage_bytes = reinterpret_cast<const uint8_t *>(stage);
    float acc = 0.f;
    for (uint32_t c0 = 0; c0 < nb; c0 += CHUNK_BLOCKS) {
        const uint32_t cnt = min((uint32_t)CHUNK_BLOCKS, nb - c0);
        const uint8_t *start = row + (uint64_t)c0 * MXFP4_BLOCK_BYTES;
        const uint8_t *aligned =
            reinterpret_cast<const uint8_t *>(reinterpret_cast<uintptr_t>(start) & ~(uintptr_t)15);
        const uint32_t skew = (uint32_t)(start - aligned);
        const uint32_t nvec = (skew + cnt * MXFP4_BLOCK_BYTES + 15) / 16;
        for (uint32_t i = lane; i < nvec; i += 32) {
            load_vec_clipped(aligned + 16 * i, lo, hi, &stage[i]);
        }
        __syncwarp();
        if (lane < cnt) {
            const uint8_t *blk = stage_bytes + skew + lane * MXFP4_BLOCK_BYTES;
            const float *xb = x + (uint64_t)(c0 + lane) * MXFP4_BLOCK_ELEMS;
            float s = 0.f;
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                const uint8_t q = blk[1 + j];
                s += mxfp4_kv(q & 0x0f) * xb[j];
                s += mxfp4_kv(q >> 4) * xb[j + 16];
            }
            acc += s * mxfp4_scale(blk[0]);
        }
        __syncwarp();
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
    __shared__ uint4 stage[WARPS_PER_BLOCK][STAGE_VECS];
    const uint32_t warp = threadIdx.x >> 5;
    const uint32_t col = blockIdx.x * WARPS_PER_BLOCK + warp;
    if (col >= n) {
        return;
    }
    const uint32_t nb = k / MXFP4_BLOCK_ELEMS;
    const uint8_t *row = w + (uint64_t)col * nb * MXFP4_BLOCK_BYTES;
    for (uint32_t r = blockIdx.y; r < m; r += gridDim.y) {
        const float d = warp_mxfp4_row_dot(row, nb, x + (uint64_t)r * k, w, w + w_len, stage[warp]);
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
    __shared__ uint4 stage[WARPS_PER_BLOCK][STAGE_VECS];
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
            d = warp_mxfp4_row_dot(row, nb, x + xr * k, w, w + w_len, stage[warp]);
            d += bias ? bias[row_index] : 0.f;
        }
        if ((threadIdx.x & 31) == 0) {
            y[(uint64_t)p * n + col] = d;
        }
    }
}
