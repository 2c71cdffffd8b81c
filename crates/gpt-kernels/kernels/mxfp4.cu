// MXFP4 -> f32 dequantization.
#include "mxfp4.cuh"

// blocks: U8 (n_blocks * 17) contiguous; out: f32 (n_blocks * 32).
// One thread per (block, j): writes elements j and j + 16 of the block.
extern "C" __global__ void mxfp4_dequant_f32(const uint8_t *__restrict__ blocks,
                                             float *__restrict__ out,
                                             const uint32_t n_blocks) {
    const uint64_t tid = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uint64_t b = tid >> 4;
    const uint32_t j = (uint32_t)(tid & 15);
    if (b >= n_blocks) {
        return;
    }
    const uint8_t *blk = blocks + b * MXFP4_BLOCK_BYTES;
    const float scale = mxfp4_scale(blk[0]);
    const uint8_t q = blk[1 + j];
    float *dst = out + b * MXFP4_BLOCK_ELEMS;
    dst[j] = mxfp4_kv(q & 0x0f) * scale;
    dst[j + 16] = mxfp4_kv(q >> 4) * scale;
}
