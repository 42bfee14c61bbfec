/* AVX-512 dense GEMM for the avx512 variant (class `default`; real code only with the complete AVX-512 set):
 * bf16 with VDPBF16PS, int8 with VNNI VPDPBUSD (A is shifted to u8 by +128, and 128 * column sum of B is taken
 * back off). Register blocking: up to 8 rows x 2 panels (16 accumulators); B panels come from the packed layout,
 * A from a copy as 32-bit groups (broadcast from memory by the dot-product instruction itself). */
#include <string.h>

#include "akf_internal.h"

#if AKF_BUILT_avx512
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { BF16 = AKF_BF16, INT8 = AKF_INT8 };

/* fp32 -> bf16 (VCVTNEPS2BF16: round to nearest even), 16 at a time; the tail as the reference rounds */
static void cvt_bf16(const float *in, uint16_t *out, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(in + i)));
    for (; i < n; i++) out[i] = akf_bf16_round(in[i]);
}

static inline uint32_t group_of(int dt, const void *A, int K, int row, int g) {
    /* the g-th pair (bf16) or quad (int8) of row `row`, zero past K; int8 shifted to u8 */
    uint32_t v = 0;
    if (dt == BF16) {
        const uint16_t *a = (const uint16_t *)A + (size_t)row * K;
        int k = 2 * g;
        if (k + 2 <= K) memcpy(&v, a + k, 4);
        else if (k < K) v = a[k];
        return v;
    }
    const int8_t *a = (const int8_t *)A + (size_t)row * K;
    int k = 4 * g;
    if (k + 4 <= K) memcpy(&v, a + k, 4);
    else for (int i = 0; k + i < K; i++) v |= (uint32_t)(uint8_t)a[k + i] << (8 * i);
    return v ^ 0x80808080u;
}

/* Each B panel is prefetched this many bytes ahead of its loads: a product of few rows streams B from memory once,
 * and the hardware's prefetch alone left its loads waiting. The builder (1 / 2 threads, 2048x5632, paired fraction of
 * the read bandwidth, without -> with, two runs): bf16 M=4 66-69 -> 89-100 % (41-43 -> 58-61 GFLOP/s at 1 thread),
 * M=8 39-41 -> 56-63 %, int8 M=4 80-85 -> 85-90 %; M=1 and M=128 (B from L2) within the runs' spread; 4096 bytes
 * alike, 512 and 1024 less. */
#define PREFETCH 2048

/* R rows x nn panels over all K: per group of k, one or two B vector loads and R x nn dot products whose A operand
 * is a 32-bit broadcast straight from memory (folded into the instruction as {1to16}: no shuffle-port uop). The
 * loops over rows and panels are unrolled so that the accumulators live in registers (one set, int8 sums as the
 * same bits): left to gcc 12 they stayed on the stack, a load and a store around every dot product (the builder, 1
 * thread, bf16 128x2048x2048: 74 GFLOP/s, 63 % of its VDPBF16PS peak, behind the avx2 implementation's 103). */
static inline __attribute__((always_inline)) void rows_x_panels(int dt, int R, int nn, int G, const uint32_t *Ag,
                                                                 const char *b0, const char *b1, __m512 *out) {
    __m512 acc[8][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        acc[r][0] = _mm512_setzero_ps();
        acc[r][1] = _mm512_setzero_ps();
    }
    for (int g = 0; g < G; g++) {
        _mm_prefetch(b0 + (size_t)g * 64 + PREFETCH, _MM_HINT_T0);
        if (nn > 1) _mm_prefetch(b1 + (size_t)g * 64 + PREFETCH, _MM_HINT_T0);
        __m512i v0 = _mm512_loadu_si512(b0 + (size_t)g * 64), v1 = v0;
        if (nn > 1) v1 = _mm512_loadu_si512(b1 + (size_t)g * 64);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512i a = _mm512_set1_epi32((int)Ag[(size_t)r * G + g]);
            if (dt == BF16) {
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], (__m512bh)a, (__m512bh)v0);
                if (nn > 1) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], (__m512bh)a, (__m512bh)v1);
            } else {
                acc[r][0] = _mm512_castsi512_ps(_mm512_dpbusd_epi32(_mm512_castps_si512(acc[r][0]), a, v0));
                if (nn > 1)
                    acc[r][1] = _mm512_castsi512_ps(_mm512_dpbusd_epi32(_mm512_castps_si512(acc[r][1]), a, v1));
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        out[r * 2] = acc[r][0];
        if (nn > 1) out[r * 2 + 1] = acc[r][1];
    }
}

static void finish(int dt, int R, int nn, int N, int r0, int p, const __m512 *acc, float *C, const float *as,
                   const float *bs, const int32_t *colsum) {
    for (int r = 0; r < R; r++)
        for (int j = 0; j < nn; j++) {
            int c0 = (p + j) * 16, cols = AKF_MIN(16, N - c0);
            __mmask16 m = (__mmask16)((1u << cols) - 1u);
            __m512 v = acc[r * 2 + j];
            if (dt == INT8) {
                __m512i fix = _mm512_slli_epi32(_mm512_loadu_si512(colsum + c0), 7); /* 128 * colsum */
                v = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_castps_si512(v), fix));
                v = _mm512_mul_ps(v, _mm512_mul_ps(_mm512_set1_ps(as[r0 + r]), _mm512_maskz_loadu_ps(m, bs + c0)));
            }
            _mm512_mask_storeu_ps(C + (size_t)(r0 + r) * N + c0, m, v);
        }
}

void akf_avx512_row_block(int dt, int R, int nn, int G, const uint32_t *ag, const char *b0, const char *b1, int N,
                          int r0, int p, float *C, const float *as, const float *bs, const int32_t *colsum) {
    __m512 acc[16];
#define CASE(RR)                                                                                 \
    case RR:                                                                                     \
        if (dt == BF16) {                                                                        \
            if (nn == 2) rows_x_panels(BF16, RR, 2, G, ag, b0, b1, acc);                         \
            else rows_x_panels(BF16, RR, 1, G, ag, b0, b1, acc);                                 \
        } else {                                                                                 \
            if (nn == 2) rows_x_panels(INT8, RR, 2, G, ag, b0, b1, acc);                         \
            else rows_x_panels(INT8, RR, 1, G, ag, b0, b1, acc);                                 \
        }                                                                                        \
        break;
    switch (R) { CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) default: CASE(8) }
#undef CASE
    finish(dt, R, nn, N, r0, p, acc, C, as, bs, colsum);
}

static int gemm(int dt, int M, int N, int K, const void *A, const float *as, const void *Bp, const float *bs, float *C) {
    const int kt = AKF_DTYPE[dt].tile_k, per = AKF_DTYPE[dt].group;
    const int Kp = AKF_ROUNDUP(K, kt), panels = AKF_ROUNDUP(N, 16) / 16, pairs = (panels + 1) / 2;
    const int G = (K + per - 1) / per; /* pairs or quads that hold real data */
    const size_t panel_bytes = (size_t)Kp * 16 * AKF_DTYPE[dt].elem_bytes;
    const int32_t *colsum = dt == INT8 ? (const int32_t *)((const char *)Bp + (size_t)Kp * panels * 16) : NULL;
    const int RB = 8, row_blocks = (M + RB - 1) / RB;
    /* A as groups (one 32-bit word per pair / quad, int8 already shifted), copied by all threads into scratch, or
     * kept there from the same product's last claim */
    int kept;
    uint32_t *Ag = akf_scratch_a_kept(AKF_A_FORM(AKF_A_GROUPS, dt), M, K, A, sizeof(uint32_t) * (size_t)M * G, &kept);
    if (!Ag) return AKF_ERR_ARG;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int r = 0; r < (kept ? 0 : M); r++)
            for (int g = 0; g < G; g++) Ag[(size_t)r * G + g] = group_of(dt, A, K, r, g);
#pragma omp for collapse(2) schedule(static)
        for (int q = 0; q < pairs; q++)
            for (int rb = 0; rb < row_blocks; rb++) {
                const int p = 2 * q, nn = p + 1 < panels ? 2 : 1, r0 = rb * RB, R = AKF_MIN(RB, M - r0);
                const char *b0 = (const char *)Bp + (size_t)p * panel_bytes, *b1 = b0 + panel_bytes;
                akf_avx512_row_block(dt, R, nn, G, Ag + (size_t)r0 * G, b0, b1, N, r0, p, C, as, bs, colsum);
            }
    }
    return AKF_OK;
}

AKF_GEMM_ENTRY_POINTS(avx512)
#else
AKF_GEMM_NOT_BUILT(avx512)
#endif
