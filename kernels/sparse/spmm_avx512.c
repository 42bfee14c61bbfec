/* AVX-512 sparse x dense for the avx512 variant (class `default`): per tile row, VPEXPANDW/VPEXPANDB the nonzeros
 * under the row's bitmask straight into a register, then VDPBF16PS / VPDPBUSD against the broadcast A pair/quad.
 * Four accumulators per output row (two from five rows on) hide the dot-product latency. All-zero tiles are skipped;
 * threads split by nonzeros. Products of EXPAND_MIN_M rows or more (prefill) expand each pair of panels once into the
 * dense layout and run the dense kernel's register block over it. */
#include <stdlib.h>
#include <string.h>

#include "akf_internal.h"

#if AKF_BUILT_avx512
#include <immintrin.h>

enum { BF16 = AKF_BF16, INT8 = AKF_INT8 };
/* Rows of A per pass: up to 4 rows x 4 accumulators or 8 rows x 2, 16 registers. Passes of 4 read the thread's
 * weights and expanded each tile twice for 8 rows; the builder (avx512, 2 threads, 2048x5632 at 50 % zeros, ms, 4 -> 8
 * rows a pass): bf16 M=6 1.20 -> 0.95, M=8 1.33 -> 1.18 (dense 1.02); int8 M=6 0.50 -> 0.34, M=8 0.53 -> 0.36; M=1, 2
 * alike. */
#define MR 8
/* From this many rows of A on, each pair of panels is expanded once into the dense layout and the dense kernel's
 * register block runs all rows over it; below, the passes of MR rows expand each tile into registers, reading the
 * thread's weights once per pass. The builder (avx512, 2 threads, 2048x5632 at 50 % zeros, ms, passes of 4 -> expanded
 * once, dense for scale): M=8 1.33 -> 1.63 (dense 0.97), 16 2.42 -> 2.43 (1.80), 32 4.54 -> 3.86 (3.27), 128 17.5 ->
 * 14.2 (12.9): a pruned model's prefill had run 0.76x the dense model's. */
#define EXPAND_MIN_M 16

static inline __attribute__((always_inline)) void panel(int dt, int R, const akf_sparse *S, int p, const uint32_t *Ag,
                                                        int G, __m512 *out) {
    const int NA = R > 4 ? 2 : 4; /* accumulators per row (R is a constant: the calls are inlined) */
    __m512 accf[MR][4];
    __m512i acci[MR][4];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < NA; j++) { accf[i][j] = _mm512_setzero_ps(); acci[i][j] = _mm512_setzero_si512(); }
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
#pragma GCC unroll 8
                for (int i = 0; i < R; i++)
                    accf[i][r & (NA - 1)] =
                        _mm512_dpbf16_ps(accf[i][r & (NA - 1)],
                                         (__m512bh)_mm512_set1_epi32((int)Ag[(size_t)i * G + t * 16 + r]), (__m512bh)b);
            }
        } else {
            const int8_t *vp = (const int8_t *)S->values + S->tile_off[tile];
            const uint64_t *masks = (const uint64_t *)S->masks + tile * 16;
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) {
                const uint64_t m = masks[r];
                const __m512i b = _mm512_maskz_expand_epi8((__mmask64)m, _mm512_loadu_si512(vp));
                vp += __builtin_popcountll(m);
#pragma GCC unroll 8
                for (int i = 0; i < R; i++)
                    acci[i][r & (NA - 1)] = _mm512_dpbusd_epi32(
                        acci[i][r & (NA - 1)], _mm512_set1_epi32((int)Ag[(size_t)i * G + t * 16 + r]), b);
            }
        }
    }
    for (int i = 0; i < R; i++) { /* (0 + 1) + (2 + 3), the order of the passes of 4 */
        if (dt == BF16) {
            out[i] = _mm512_add_ps(accf[i][0], accf[i][1]);
            if (NA == 4) out[i] = _mm512_add_ps(out[i], _mm512_add_ps(accf[i][2], accf[i][3]));
        } else {
            __m512i v = _mm512_add_epi32(acci[i][0], acci[i][1]);
            if (NA == 4) v = _mm512_add_epi32(v, _mm512_add_epi32(acci[i][2], acci[i][3]));
            out[i] = _mm512_castsi512_ps(v);
        }
    }
}

/* Panel p's tiles expanded into the dense pair / quad layout (Kp / group rows of 64 bytes), all-zero tiles as zeros. */
static void expand_panel(int dt, const akf_sparse *S, int p, char *out) {
    const int KT = S->ktiles;
    for (int t = 0; t < KT; t++) {
        const size_t tile = (size_t)p * KT + t;
        char *dst = out + (size_t)t * 16 * 64;
        if (S->tile_off[tile + 1] == S->tile_off[tile]) {
            memset(dst, 0, 16 * 64);
            continue;
        }
        if (dt == BF16) {
            const uint16_t *vp = (const uint16_t *)S->values + S->tile_off[tile];
            const uint32_t *masks = (const uint32_t *)S->masks + tile * 16;
            for (int r = 0; r < 16; r++) {
                _mm512_storeu_si512(dst + r * 64, _mm512_maskz_expand_epi16((__mmask32)masks[r], _mm512_loadu_si512(vp)));
                vp += __builtin_popcount(masks[r]);
            }
        } else {
            const int8_t *vp = (const int8_t *)S->values + S->tile_off[tile];
            const uint64_t *masks = (const uint64_t *)S->masks + tile * 16;
            for (int r = 0; r < 16; r++) {
                _mm512_storeu_si512(dst + r * 64, _mm512_maskz_expand_epi8((__mmask64)masks[r], _mm512_loadu_si512(vp)));
                vp += __builtin_popcountll(masks[r]);
            }
        }
    }
}

static int spmm(int dt, int M, const void *A, const float *as, const akf_sparse *S, const float *bs, float *C) {
    const int per = AKF_DTYPE[dt].group, G = S->Kp / per, N = S->N, K = S->K;
    /* A as 32-bit groups (pairs / quads, int8 shifted to u8), zero padded to Kp: one broadcast per tile row */
    int kept;
    uint32_t *Ag = akf_scratch_a_kept(AKF_A_FORM(AKF_A_GROUPS_KP, dt), M, K, A, sizeof(uint32_t) * (size_t)M * G, &kept);
    if (!Ag) return AKF_ERR_ARG;
    for (int i = 0; !kept && i < M; i++) akf_group_a_row(dt, A, K, S->Kp, i, Ag + (size_t)i * G);
    int failed = 0;
#pragma omp parallel
    {
        int p0, p1;
        akf_sparse_thread_panels(S, &p0, &p1);
        const int expand = M >= EXPAND_MIN_M && p1 > p0;
        char *dense = expand ? akf_scratch(AKF_SCRATCH_B, (size_t)2 * G * 64) : NULL;
        if (expand && !dense) {
#pragma omp atomic write
            failed = 1;
        }
        for (int p = p0; dense && p < p1; p += 2) {
            const int nn = p + 1 < p1 ? 2 : 1;
            for (int j = 0; j < nn; j++) expand_panel(dt, S, p + j, dense + (size_t)j * G * 64);
            for (int r0 = 0; r0 < M; r0 += 8)
                akf_avx512_row_block(dt, AKF_MIN(8, M - r0), nn, G, Ag + (size_t)r0 * G, dense, dense + (size_t)G * 64,
                                     N, r0, p, C, as, bs, S->colsum);
        }
        for (int m0 = 0; !expand && m0 < M; m0 += MR) {
            const int R = AKF_MIN(MR, M - m0);
            const uint32_t *ag = Ag + (size_t)m0 * G;
            for (int p = p0; p < p1; p++) {
                __m512 acc[MR];
#define CASE(RR)                                             \
    case RR:                                                 \
        if (dt == BF16) panel(BF16, RR, S, p, ag, G, acc);   \
        else panel(INT8, RR, S, p, ag, G, acc);              \
        break;
                switch (R) { CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) default: CASE(8) }
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
    return failed ? AKF_ERR_ARG : AKF_OK;
}

AKF_SPMM_ENTRY_POINTS(avx512)
#else
AKF_SPMM_NOT_BUILT(avx512)
#endif
