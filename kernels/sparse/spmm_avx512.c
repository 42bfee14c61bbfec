/* AVX-512 sparse x dense for the avx512 variant (class `default`): per tile row, VPEXPANDW/VPEXPANDB the nonzeros
 * under the row's bitmask straight into a register, then VDPBF16PS / VPDPBUSD against the broadcast A pair/quad.
 * Four accumulators per output row hide the dot-product latency. All-zero tiles are skipped; threads split by
 * nonzeros. */
#include <stdlib.h>
#include <string.h>

#include "akf_internal.h"

#if AKF_BUILT_avx512
#include <immintrin.h>

enum { BF16 = AKF_BF16, INT8 = AKF_INT8 };
#define MR 4 /* rows of A per pass: 4 rows x 4 accumulators = 16 registers */

static inline __attribute__((always_inline)) void panel(int dt, int R, const akf_sparse *S, int p, const uint32_t *Ag,
                                                        int G, __m512 *out) {
    __m512 accf[MR][4];
    __m512i acci[MR][4];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < 4; j++) { accf[i][j] = _mm512_setzero_ps(); acci[i][j] = _mm512_setzero_si512(); }
    const int KT = S->ktiles;
    for (int t = 0; t < KT; t++) {
        const size_t tile = (size_t)p * KT + t;
        if (t + AKF_SPARSE_PREFETCH < KT) {
            const size_t ahead = tile + AKF_SPARSE_PREFETCH, es = AKF_DTYPE[dt].elem_bytes, ms = AKF_DTYPE[dt].mask_bytes;
            AKF_PREFETCH_RANGE((const char *)S->values + S->tile_off[ahead] * es,
                               (const char *)S->values + S->tile_off[ahead + 1] * es);
            AKF_PREFETCH_RANGE((const char *)S->masks + ahead * 16 * ms, (const char *)S->masks + (ahead + 1) * 16 * ms);
        }
        if (S->tile_off[tile + 1] == S->tile_off[tile]) continue; /* all-zero tile: skipped */
        if (dt == BF16) {
            const uint16_t *vp = (const uint16_t *)S->values + S->tile_off[tile];
            const uint32_t *masks = (const uint32_t *)S->masks + tile * 16;
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) {
                const uint32_t m = masks[r];
                const __m512i b = _mm512_maskz_expand_epi16((__mmask32)m, _mm512_loadu_si512(vp));
                vp += __builtin_popcount(m);
#pragma GCC unroll 4
                for (int i = 0; i < R; i++)
                    accf[i][r & 3] = _mm512_dpbf16_ps(accf[i][r & 3], (__m512bh)_mm512_set1_epi32((int)Ag[(size_t)i * G + t * 16 + r]),
                                                      (__m512bh)b);
            }
        } else {
            const int8_t *vp = (const int8_t *)S->values + S->tile_off[tile];
            const uint64_t *masks = (const uint64_t *)S->masks + tile * 16;
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) {
                const uint64_t m = masks[r];
                const __m512i b = _mm512_maskz_expand_epi8((__mmask64)m, _mm512_loadu_si512(vp));
                vp += __builtin_popcountll(m);
#pragma GCC unroll 4
                for (int i = 0; i < R; i++)
                    acci[i][r & 3] = _mm512_dpbusd_epi32(acci[i][r & 3], _mm512_set1_epi32((int)Ag[(size_t)i * G + t * 16 + r]), b);
            }
        }
    }
    for (int i = 0; i < R; i++)
        out[i] = dt == BF16 ? _mm512_add_ps(_mm512_add_ps(accf[i][0], accf[i][1]), _mm512_add_ps(accf[i][2], accf[i][3]))
                            : _mm512_castsi512_ps(_mm512_add_epi32(_mm512_add_epi32(acci[i][0], acci[i][1]),
                                                                   _mm512_add_epi32(acci[i][2], acci[i][3])));
}

static int spmm(int dt, int M, const void *A, const float *as, const akf_sparse *S, const float *bs, float *C) {
    const int per = AKF_DTYPE[dt].group, G = S->Kp / per, N = S->N, K = S->K;
    /* A as 32-bit groups (pairs / quads, int8 shifted to u8), zero padded to Kp: one broadcast per tile row */
    uint32_t *Ag = akf_scratch(AKF_SCRATCH_A, sizeof(uint32_t) * (size_t)M * G);
    if (!Ag) return AKF_ERR_ARG;
    for (int i = 0; i < M; i++) akf_group_a_row(dt, A, K, S->Kp, i, Ag + (size_t)i * G);
#pragma omp parallel
    {
        int p0, p1;
        akf_sparse_thread_panels(S, &p0, &p1);
        for (int m0 = 0; m0 < M; m0 += MR) {
            const int R = AKF_MIN(MR, M - m0);
            const uint32_t *ag = Ag + (size_t)m0 * G;
            for (int p = p0; p < p1; p++) {
                __m512 acc[MR];
#define CASE(RR)                                             \
    case RR:                                                 \
        if (dt == BF16) panel(BF16, RR, S, p, ag, G, acc);   \
        else panel(INT8, RR, S, p, ag, G, acc);              \
        break;
                switch (R) { CASE(1) CASE(2) CASE(3) default: CASE(4) }
#undef CASE
                const int c0 = p * 16, cols = AKF_MIN(16, N - c0);
                const __mmask16 m = (__mmask16)((1u << cols) - 1u);
                for (int i = 0; i < R; i++) {
                    __m512 v = acc[i];
                    if (dt == INT8) {
                        __m512i fix = _mm512_slli_epi32(_mm512_loadu_si512(S->colsum + c0), 7);
                        v = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_castps_si512(v), fix));
                        v = _mm512_mul_ps(v, _mm512_mul_ps(_mm512_set1_ps(as[m0 + i]), _mm512_maskz_loadu_ps(m, bs + c0)));
                    }
                    _mm512_mask_storeu_ps(C + (size_t)(m0 + i) * N + c0, m, v);
                }
            }
        }
    }
    return AKF_OK;
}

AKF_SPMM_ENTRY_POINTS(avx512)
#else
AKF_SPMM_NOT_BUILT(avx512)
#endif
