/* AVX-512 BF16 GEMM (class `default`; real code only where the variant enables the complete AVX-512 set).
 * One row of A against a 16-column panel of packed B: VDPBF16PS accumulates a (k, k+1) pair per lane. */
#include "akf_internal.h"

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>

int akf_avx512_built(void) { return 1; }

int akf_gemm_bf16_avx512(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {
    const int panels = (N + 15) / 16, pairs = K / 2;
    const size_t panel_elems = (size_t)AKF_ROUNDUP(K, 32) * 16;
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < M; i++)
        for (int p = 0; p < panels; p++) {
            const uint16_t *a = A + (size_t)i * K;
            const uint16_t *b = Bp + (size_t)p * panel_elems;
            __m512 acc = _mm512_setzero_ps();
            for (int kp = 0; kp < pairs; kp++) {
                uint32_t pair = (uint32_t)a[2 * kp] | ((uint32_t)a[2 * kp + 1] << 16);
                __m512i av = _mm512_set1_epi32((int)pair);
                __m512i bv = _mm512_loadu_si512(b + (size_t)kp * 32);
                acc = _mm512_dpbf16_ps(acc, (__m512bh)av, (__m512bh)bv);
            }
            if (K & 1) { /* last k alone: pair it with zero, never with the next row's data */
                __m512i av = _mm512_set1_epi32((int)(uint32_t)a[K - 1]);
                __m512i bv = _mm512_loadu_si512(b + (size_t)pairs * 32);
                acc = _mm512_dpbf16_ps(acc, (__m512bh)av, (__m512bh)bv);
            }
            int cols = N - p * 16 < 16 ? N - p * 16 : 16;
            _mm512_mask_storeu_ps(C + (size_t)i * N + (size_t)p * 16, (__mmask16)((1u << cols) - 1u), acc);
        }
    return AKF_OK;
}
#else
int akf_avx512_built(void) { return 0; }
int akf_gemm_bf16_avx512(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {
    (void)M; (void)N; (void)K; (void)A; (void)Bp; (void)C;
    return AKF_ERR_NOT_BUILT;
}
#endif
