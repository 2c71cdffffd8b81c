// Tensor-core helpers shared by the int8 MMA kernels (prefill_gemm.cu, moe_mma.cu).
#pragma once
#include <stdint.h>

// 1.5 * 2^23 as float bits and value: an int32 MMA accumulator started at MM_MAGIC holds
// MM_MAGIC + r, which read as a float is 1.5 * 2^23 + r exactly while |r| < 2^22, so subtracting
// MM_MAGIC_F converts r without I2F (a quarter-rate instruction).
#define MM_MAGIC 0x4B400000
#define MM_MAGIC_F 12582912.f

// c += a (16x32 s8, row) * b (32x8 s8, col), s32 accumulators. Fragments (g = lane / 4,
// t = lane % 4): a0 = A[g][4t..4t+4], a1 = A[g+8][4t..], a2 = A[g][16+4t..], a3 = A[g+8][16+4t..];
// b0 = B[4t..4t+4][g], b1 = B[16+4t..][g]; c0, c1 = C[g][2t], C[g][2t+1], c2, c3 = C[g+8][..].
__device__ __forceinline__ void mma_s8(int c[4], const int a[4], int b0, int b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
