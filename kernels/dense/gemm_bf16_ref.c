/* Scalar reference bf16 GEMM (class `default`): double accumulation, the yardstick for the fast kernels. */
#include <string.h>

#include "akf_internal.h"

static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

int akf_gemm_bf16_ref(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++)
        for (int n = 0; n < N; n++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)bf16_to_f32(A[(size_t)i * K + k]) * bf16_to_f32(Bp[akf_bf16_packed_index(K, k, n)]);
            C[(size_t)i * N + n] = (float)acc;
        }
    return AKF_OK;
}
