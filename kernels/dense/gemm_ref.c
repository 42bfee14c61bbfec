/* Scalar references (class `default`): exact or double accumulation; the yardsticks for the fast kernels. */
#include <stdlib.h>

#include "akf_internal.h"

int akf_cvt_bf16_ref(const float *in, uint16_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = akf_bf16_round(in[i]);
    return AKF_OK;
}

int akf_gemm_bf16_ref(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++)
        for (int n = 0; n < N; n++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)akf_bf16_to_f32(A[(size_t)i * K + k]) *
                       akf_bf16_to_f32(Bp[akf_bf16_packed_index(K, k, n)]);
            C[(size_t)i * N + n] = (float)acc;
        }
    return AKF_OK;
}

int akf_gemm_int8_ref(int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp, const float *bs,
                      float *C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++)
        for (int n = 0; n < N; n++) {
            int64_t acc = 0;
            for (int k = 0; k < K; k++) acc += (int64_t)A[(size_t)i * K + k] * (int8_t)Bp[akf_int8_packed_index(K, k, n)];
            C[(size_t)i * N + n] = (float)acc * (as[i] * bs[n]); /* the kernels' order: exact match */
        }
    return AKF_OK;
}

/* Sparse references: unpack, then the dense reference on row-major B (independent of the fast kernels' logic). */
int akf_spmm_bf16_ref(int M, const uint16_t *A, const akf_sparse *S, float *C) {
    uint16_t *B = malloc(sizeof *B * (size_t)S->K * S->N);
    if (!B) return AKF_ERR_ARG;
    akf_sparse_unpack(S, B);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++)
        for (int n = 0; n < S->N; n++) {
            double acc = 0.0;
            for (int k = 0; k < S->K; k++)
                acc += (double)akf_bf16_to_f32(A[(size_t)i * S->K + k]) * akf_bf16_to_f32(B[(size_t)k * S->N + n]);
            C[(size_t)i * S->N + n] = (float)acc;
        }
    free(B);
    return AKF_OK;
}

int akf_spmm_int8_ref(int M, const int8_t *A, const float *as, const akf_sparse *S, const float *bs, float *C) {
    int8_t *B = malloc((size_t)S->K * S->N);
    if (!B) return AKF_ERR_ARG;
    akf_sparse_unpack(S, B);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++)
        for (int n = 0; n < S->N; n++) {
            int64_t acc = 0;
            for (int k = 0; k < S->K; k++) acc += (int64_t)A[(size_t)i * S->K + k] * B[(size_t)k * S->N + n];
            C[(size_t)i * S->N + n] = (float)acc * (as[i] * bs[n]);
        }
    free(B);
    return AKF_OK;
}
