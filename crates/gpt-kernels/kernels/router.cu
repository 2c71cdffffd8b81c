// MoE router: top-k of each token's expert logits, then softmax over the selected k.
// Output order: descending logit; ties go to the lower expert index.
#include <stdint.h>

#define ROUTER_MAX_K 32

// logits: f32 (tokens, n_experts); weights: f32 (tokens, k); ids: u32 (tokens, k).
// One thread per token. Requires 1 <= k <= min(n_experts, ROUTER_MAX_K).
extern "C" __global__ void router_topk_softmax_f32(const float *__restrict__ logits,
                                                   float *__restrict__ weights,
                                                   uint32_t *__restrict__ ids,
                                                   const uint32_t tokens,
                                                   const uint32_t n_experts, const uint32_t k) {
    const uint32_t tok = blockIdx.x * blockDim.x + threadIdx.x;
    if (tok >= tokens) {
        return;
    }
    const float *row = logits + (uint64_t)tok * n_experts;
    uint32_t sel[ROUTER_MAX_K];
    float val[ROUTER_MAX_K];
    for (uint32_t c = 0; c < k; ++c) {
        int64_t best = -1;
        float best_v = 0.f;
        for (uint32_t j = 0; j < n_experts; ++j) {
            bool taken = false;
            for (uint32_t q = 0; q < c; ++q) {
                taken |= sel[q] == j;
            }
            if (taken) continue;
            const float x = row[j];
            if (best < 0 || x > best_v) {
                best = j;
                best_v = x;
            }
        }
        sel[c] = (uint32_t)best;
        val[c] = best_v;
    }
    const float mx = val[0];
    float sum = 0.f;
    for (uint32_t c = 0; c < k; ++c) {
        val[c] = expf(val[c] - mx);
        sum += val[c];
    }
    for (uint32_t c = 0; c < k; ++c) {
        weights[(uint64_t)tok * k + c] = val[c] / sum;
        ids[(uint64_t)tok * k + c] = sel[c];
    }
}
