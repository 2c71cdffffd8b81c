// MXFP4 (ggml block_mxfp4) decoding helpers shared by the MXFP4 kernels.
//
// Block layout (17 bytes per 32 weights): byte 0 = e (E8M0 exponent), bytes 1..17 = qs[16].
// Element j (0..16) is the low nibble of qs[j]; element j+16 is its high nibble.
// value = KVALUES[nibble] * 2^(e - 128)   (KVALUES are the doubled E2M1 values, so the
// usual 2^(e-127) scale is halved).
#pragma once
#include <stdint.h>

#define MXFP4_BLOCK_ELEMS 32
#define MXFP4_BLOCK_BYTES 17

// The doubled E2M1 value of a 4-bit code, {0,1,2,3,4,6,8,12} with bit 3 as the sign, decoded in
// registers (a __constant__ table serializes when a warp's lanes index it differently). Code 8
// gives +0.0, as ggml's table does.
__device__ __forceinline__ float mxfp4_kv(uint32_t q) {
    const float v = (float)((uint32_t)(0x0C08060403020100ull >> ((q & 7u) * 8u)) & 0xFFu);
    return (q & 8u) ? (0.f - v) : v;
}

// 2^(e - 128) built bit-exactly: e < 2 gives the subnormals 2^-128 and 2^-127.
__device__ __forceinline__ float mxfp4_scale(uint8_t e) {
    const uint32_t bits = e < 2 ? (0x00200000u << e) : ((uint32_t)(e - 1) << 23);
    return __uint_as_float(bits);
}

// Four nibbles (the low 16 bits of q) to four int8 doubled-E2M1 values, byte i from nibble i.
__device__ __forceinline__ int mx_lut4(uint32_t q) {
    const uint32_t sel = q & 0x7777u;
    const uint32_t pos = __byte_perm(0x03020100u, 0x0C080604u, sel);
    const uint32_t neg = __byte_perm(0xFDFEFF00u, 0xF4F8FAFCu, sel);
    return (int)__byte_perm(pos, neg, 0x3210u | ((q & 0x8888u) >> 1));
}
