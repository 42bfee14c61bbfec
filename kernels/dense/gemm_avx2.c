/* AVX2 + FMA dense GEMM (class `default`, the avx2 implementation; built into baseline and every variant above it).
 *
 * bf16: values are widened to fp32 (a bf16 is the top half of an fp32: a shift or a mask) and multiplied with FMA.
 * int8: exact, as s8 x s8 -> s32 through VPMADDWD on sign-extended 16-bit lanes (VPMADDUBSW would saturate at
 *       -128 x -128 pairs and VPDPBUSD is AVX-VNNI / AVX-512), then scaled like the others: acc * (a_scale * b_scale).
 *
 * Decode (M <= STREAM_M): B is streamed once, straight from the packed layout; each 64-byte pair/quad row is widened
 *   in registers and used by up to 2 rows of A (the panel is re-read from L2 for further rows).
 * Prefill: blocked like BLIS for registers and caches: a K block of B (KC values of k) for NCP panels is widened
 *   once into an fp32 (bf16) or s16-pair (int8) buffer that stays in L2, A's K block is packed 6 rows at a time,
 *   and a 6x16 micro-kernel (12 accumulators) runs over every 6-row block x panel; partial sums live in C itself
 *   (int8: as int32 until the last K block, then scaled in place). Threads split the panels. */
#include <stdlib.h>
#include <string.h>

#include "akf_internal.h"

#if AKF_BUILT_avx2
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* fp32 -> bf16, round to nearest even in integer lanes (AVX2 has no conversion), NaN kept a NaN; 8 at a time */
static void cvt_bf16(const float *in, uint16_t *out, size_t n) {
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), quiet = _mm256_set1_epi32(0x40);
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i r[2];
        for (int h = 0; h < 2; h++) {
            const __m256i u = _mm256_castps_si256(_mm256_loadu_ps(in + i + 8 * h));
            const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
            const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, lsb)), 16);
            const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
            r[h] = _mm256_blendv_epi8(rounded, _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet), nan);
        }
        /* values below 65536 pack unsaturated; packus interleaves 128-bit lanes, the permute restores the order */
        _mm256_storeu_si256((__m256i *)(out + i), _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xd8));
    }
    for (; i < n; i++) out[i] = akf_bf16_round(in[i]);
}

enum { BF16 = AKF_BF16, INT8 = AKF_INT8 };
/* KC x NCP: the widened B block (KC x 16 x NCP x 4 bytes = 128 KB) stays in L2 (512 KB on Zen 3), the 6-row A panel
 * (24 KB) in L1. Paired A/B runs on the 2-vCPU EPYC here (30 alternating calls, M=512, 4096x4096): 1024 x 2 was 2 %
 * faster than 512 x 4 at one thread and 6 % at two; a loop order keeping each B panel in L1 while MB row blocks pass
 * was 7 % slower. The micro-kernel alone, on data in L2, reaches the FMA peak. M <= STREAM_M streams B once (blocked
 * was no faster at M=16, slower at M=4). */
enum { STREAM_M = 16, MR = 6, KC = 1024, NCP = 2 };
/* Decode streams prefetch every line this far ahead: the hardware streamer alone left the bf16 decode at about
 * 60 % of the read bandwidth on the AVX2-only EPYC here (one line in two prefetched: 7-8 GB/s, every line: 11-12). */
#ifndef PREFETCH
#define PREFETCH 1024
#endif

static inline int team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}
static inline int team_rank(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* ---- operands ----------------------------------------------------------------------------------------------- */

/* bf16 pair row (64 bytes: 16 columns x (k, k+1)) -> fp32 of k (even) and k+1 (odd), columns 0-7 and 8-15. */
static inline __attribute__((always_inline)) void widen_pairs(const char *p, __m256 *e0, __m256 *o0, __m256 *e1,
                                                               __m256 *o1) {
    const __m256i hi = _mm256_set1_epi32((int)0xFFFF0000u);
    const __m256i v0 = _mm256_loadu_si256((const __m256i *)p), v1 = _mm256_loadu_si256((const __m256i *)(p + 32));
    *e0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
    *o0 = _mm256_castsi256_ps(_mm256_and_si256(v0, hi));
    *e1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
    *o1 = _mm256_castsi256_ps(_mm256_and_si256(v1, hi));
}

/* int8 quad row (64 bytes: 16 columns x 4 k) -> s16 lanes: q[j] = columns 4j..4j+3, each (k0, k1, k2, k3). */
static inline __attribute__((always_inline)) void widen_quads(const char *p, __m256i q[4]) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) q[j] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 16 * j)));
}

/* s32 accumulators of VPMADDWD over quads (acc[j]: columns 4j..4j+3, two partial sums each) -> 16 column sums. */
static inline __attribute__((always_inline)) void quad_sums(const __m256i acc[4], __m256i *lo, __m256i *hi) {
    /* hadd(x, y): lane 0 = x's columns 0-1, y's 0-1; lane 1 = x's 2-3, y's 2-3; the permute puts them in order */
    *lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[0], acc[1]), 0xD8);
    *hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[2], acc[3]), 0xD8);
}

/* Store 16 results of row `row` (columns c0 .. c0 + cols - 1); int8 sums are scaled as the reference does. */
static inline __attribute__((always_inline)) void store_row(int dt, __m256 lo, __m256 hi, float *C, int N, int row,
                                                             int c0, int cols, const float *as, const float *bs) {
    float buf[16] __attribute__((aligned(32)));
    float *c = C + (size_t)row * N + c0;
    if (dt == INT8) {
        const __m256 a = _mm256_set1_ps(as[row]);
        if (cols == 16) {
            lo = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_castps_si256(lo)), _mm256_mul_ps(a, _mm256_loadu_ps(bs + c0)));
            hi = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_castps_si256(hi)), _mm256_mul_ps(a, _mm256_loadu_ps(bs + c0 + 8)));
        } else {
            float b[16] = {0};
            memcpy(b, bs + c0, sizeof(float) * (size_t)cols);
            lo = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_castps_si256(lo)), _mm256_mul_ps(a, _mm256_loadu_ps(b)));
            hi = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_castps_si256(hi)), _mm256_mul_ps(a, _mm256_loadu_ps(b + 8)));
        }
    }
    if (cols == 16) {
        _mm256_storeu_ps(c, lo);
        _mm256_storeu_ps(c + 8, hi);
        return;
    }
    _mm256_store_ps(buf, lo);
    _mm256_store_ps(buf + 8, hi);
    memcpy(c, buf, sizeof(float) * (size_t)cols);
}

/* ---- decode: stream B once ----------------------------------------------------------------------------------- */

/* R (1 or 2) rows x one panel over all G groups of k; aw: the rows' widened A (fp32 / s16 words), lda in words. */
static inline __attribute__((always_inline)) void stream_panel(int dt, int R, int G, const char *b, const void *aw,
                                                                size_t lda, __m256 out[2][2]) {
    if (dt == BF16) {
        /* (row, half) x two g parities: independent FMA chains (the even and odd k of a pair share one; G is a
         * multiple of 16), 8 accumulators at most so that nothing spills */
        __m256 acc[2][2][2];
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) acc[i / 4][(i / 2) % 2][i % 2] = _mm256_setzero_ps();
        const float *a = aw;
        for (int g = 0; g < G; g += 2) {
            _mm_prefetch(b + (size_t)g * 64 + PREFETCH, _MM_HINT_T0);
            _mm_prefetch(b + (size_t)g * 64 + PREFETCH + 64, _MM_HINT_T0);
#pragma GCC unroll 2
            for (int par = 0; par < 2; par++) {
                __m256 e0, o0, e1, o1;
                widen_pairs(b + (size_t)(g + par) * 64, &e0, &o0, &e1, &o1);
#pragma GCC unroll 2
                for (int r = 0; r < R; r++) {
                    const float *ar = a + (size_t)r * lda + 2 * (g + par);
                    const __m256 ae = _mm256_broadcast_ss(ar), ao = _mm256_broadcast_ss(ar + 1);
                    acc[r][0][par] = _mm256_fmadd_ps(ao, o0, _mm256_fmadd_ps(ae, e0, acc[r][0][par]));
                    acc[r][1][par] = _mm256_fmadd_ps(ao, o1, _mm256_fmadd_ps(ae, e1, acc[r][1][par]));
                }
            }
        }
#pragma GCC unroll 2
        for (int r = 0; r < R; r++)
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) out[r][h] = _mm256_add_ps(acc[r][h][0], acc[r][h][1]);
    } else {
        __m256i acc[2][4];
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) acc[i / 4][i % 4] = _mm256_setzero_si256();
        const int16_t *a = aw;
#pragma GCC unroll 2
        for (int g = 0; g < G; g++) {
            __m256i q[4];
            _mm_prefetch(b + (size_t)g * 64 + PREFETCH, _MM_HINT_T0);
            widen_quads(b + (size_t)g * 64, q);
#pragma GCC unroll 2
            for (int r = 0; r < R; r++) {
                /* (k0 k1 k2 k3) of this quad in every column's four lanes */
                const __m256i aq = _mm256_castpd_si256(_mm256_broadcast_sd((const double *)(a + (size_t)r * lda * 2 + 4 * (size_t)g)));
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_madd_epi16(q[j], aq));
            }
        }
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) {
            __m256i lo, hi;
            quad_sums(acc[r], &lo, &hi);
            out[r][0] = _mm256_castsi256_ps(lo);
            out[r][1] = _mm256_castsi256_ps(hi);
        }
    }
}

static int stream(int dt, int M, int N, int K, const void *A, const float *as, const void *Bp, const float *bs,
                  float *C) {
    const int kt = AKF_DTYPE[dt].tile_k, group = AKF_DTYPE[dt].group, Kp = AKF_ROUNDUP(K, kt);
    const int panels = AKF_ROUNDUP(N, 16) / 16, G = Kp / group;
    const size_t panel_bytes = (size_t)G * 64, lda = (size_t)Kp / 2 * (dt == BF16 ? 2 : 1); /* in 32-bit words */
    uint32_t *aw = aligned_alloc(64, AKF_ROUNDUP(sizeof(uint32_t) * lda * (size_t)M, 64));
    if (!aw) return AKF_ERR_ARG;
    for (int i = 0; i < M; i++) akf_widen_a_row(dt, A, K, Kp, i, aw + (size_t)i * lda);
#pragma omp parallel for schedule(static)
    for (int p = 0; p < panels; p++) {
        const char *b = (const char *)Bp + (size_t)p * panel_bytes;
        const int cols = AKF_MIN(16, N - p * 16);
        for (int r0 = 0; r0 < M; r0 += 2) {
            __m256 out[2][2];
            const uint32_t *a = aw + (size_t)r0 * lda;
            if (M - r0 >= 2) {
                if (dt == BF16) stream_panel(BF16, 2, G, b, a, lda, out);
                else stream_panel(INT8, 2, G, b, a, lda, out);
            } else if (dt == BF16) stream_panel(BF16, 1, G, b, a, lda, out);
            else stream_panel(INT8, 1, G, b, a, lda, out);
            for (int r = 0; r < AKF_MIN(2, M - r0); r++) store_row(dt, out[r][0], out[r][1], C, N, r0 + r, p * 16, cols, as, bs);
        }
    }
    free(aw);
    return AKF_OK;
}

/* ---- prefill: blocked ---------------------------------------------------------------------------------------- */

/* Widen B's panels [p0, p0 + np) for k in [k0, k0 + kc) into bw: per panel, per 32-bit step s (bf16: one k;
 * int8: one k pair), 16 columns (64 bytes): fp32 for bf16, (s16 k, s16 k+1) words for int8. B is packed (Bp) or,
 * bf16 only, sparse (S: its tiles expanded, akf_avx2_sparse_widen). */
static void widen_b_block(int dt, const char *Bp, size_t panel_bytes, const akf_sparse *S, int p0, int np, int k0,
                          int kc, char *bw) {
    const int steps = dt == BF16 ? kc : kc / 2;
    for (int i = 0; i < np; i++) {
        char *o = bw + (size_t)i * steps * 64;
        if (S) {
            akf_avx2_sparse_widen(S, p0 + i, k0, kc, o);
            continue;
        }
        const char *b = Bp + (size_t)(p0 + i) * panel_bytes;
        if (dt == BF16) {
            for (int g = k0 / 2; g < (k0 + kc) / 2; g++, o += 128) {
                __m256 e0, o0, e1, o1;
                widen_pairs(b + (size_t)g * 64, &e0, &o0, &e1, &o1);
                _mm256_store_ps((float *)o, e0);
                _mm256_store_ps((float *)o + 8, e1);
                _mm256_store_ps((float *)o + 16, o0);
                _mm256_store_ps((float *)o + 24, o1);
            }
        } else {
            const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
            for (int g = k0 / 4; g < (k0 + kc) / 4; g++, o += 128) {
                __m256i q[4];
                widen_quads(b + (size_t)g * 64, q);
                /* q[j] words: (c, k01), (c, k23) for 4 columns -> words of k01 for 8 columns, then of k23 */
                for (int h = 0; h < 2; h++) {
                    const __m256i x = _mm256_permutevar8x32_epi32(q[2 * h], idx);
                    const __m256i y = _mm256_permutevar8x32_epi32(q[2 * h + 1], idx);
                    _mm256_store_si256((__m256i *)(o + 32 * h), _mm256_permute2x128_si256(x, y, 0x20));
                    _mm256_store_si256((__m256i *)(o + 64 + 32 * h), _mm256_permute2x128_si256(x, y, 0x31));
                }
            }
        }
    }
}

/* Pack MR rows of widened A for k in [k0, k0 + kc): per 32-bit step, MR words (rows past M are zero). */
static void pack_a_block(int dt, const uint32_t *aw, size_t lda, int M, int r0, int k0, int kc, uint32_t *ap) {
    const int steps = dt == BF16 ? kc : kc / 2, s0 = dt == BF16 ? k0 : k0 / 2;
    for (int s = 0; s < steps; s++)
        for (int r = 0; r < MR; r++) ap[(size_t)s * MR + r] = r0 + r < M ? aw[(size_t)(r0 + r) * lda + s0 + s] : 0u;
}

/* MR x 16 outputs over `steps` 32-bit steps; first: start from zero, else add to C; last (int8): scale. */
static inline __attribute__((always_inline)) void micro(int dt, int steps, const uint32_t *ap, const char *bw, float *C,
                                                         int N, int r0, int R, int c0, int cols, int first, int last,
                                                         const float *as, const float *bs) {
    __m256 f[MR][2];
    __m256i s[MR][2];
    if (!first) /* the partial sums this block adds to are in L3 by now: start fetching them while the FMAs run */
        for (int r = 0; r < R; r++) _mm_prefetch((const char *)(C + (size_t)(r0 + r) * N + c0), _MM_HINT_T0);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        f[r][0] = f[r][1] = _mm256_setzero_ps();
        s[r][0] = s[r][1] = _mm256_setzero_si256();
    }
#pragma GCC unroll 4
    for (int k = 0; k < steps; k++) {
        const char *b = bw + (size_t)k * 64;
        if (dt == BF16) {
            const __m256 b0 = _mm256_load_ps((const float *)b), b1 = _mm256_load_ps((const float *)b + 8);
#pragma GCC unroll 6
            for (int r = 0; r < MR; r++) {
                const __m256 a = _mm256_broadcast_ss((const float *)ap + (size_t)k * MR + r);
                f[r][0] = _mm256_fmadd_ps(a, b0, f[r][0]);
                f[r][1] = _mm256_fmadd_ps(a, b1, f[r][1]);
            }
        } else {
            const __m256i b0 = _mm256_load_si256((const __m256i *)b), b1 = _mm256_load_si256((const __m256i *)(b + 32));
#pragma GCC unroll 6
            for (int r = 0; r < MR; r++) {
                const __m256i a = _mm256_set1_epi32((int)ap[(size_t)k * MR + r]);
                s[r][0] = _mm256_add_epi32(s[r][0], _mm256_madd_epi16(a, b0));
                s[r][1] = _mm256_add_epi32(s[r][1], _mm256_madd_epi16(a, b1));
            }
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        if (r >= R) break;
        float *c = C + (size_t)(r0 + r) * N + c0;
        __m256 lo = dt == BF16 ? f[r][0] : _mm256_castsi256_ps(s[r][0]);
        __m256 hi = dt == BF16 ? f[r][1] : _mm256_castsi256_ps(s[r][1]);
        if (!first) {
            float prev[16] __attribute__((aligned(32))) = {0};
            memcpy(prev, c, sizeof(float) * (size_t)cols);
            if (dt == BF16) {
                lo = _mm256_add_ps(lo, _mm256_load_ps(prev));
                hi = _mm256_add_ps(hi, _mm256_load_ps(prev + 8));
            } else { /* int32 partial sums kept in C's memory until the last K block */
                lo = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(lo), _mm256_load_si256((const __m256i *)prev)));
                hi = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(hi), _mm256_load_si256((const __m256i *)(prev + 8))));
            }
        }
        if (dt == INT8 && !last) {
            float buf[16] __attribute__((aligned(32)));
            _mm256_store_ps(buf, lo);
            _mm256_store_ps(buf + 8, hi);
            memcpy(c, buf, sizeof(float) * (size_t)cols);
        } else store_row(dt, lo, hi, C, N, r0 + r, c0, cols, as, bs);
    }
}

int akf_avx2_blocked(int dt, int M, int N, int K, const void *A, const float *as, const void *Bp, const akf_sparse *S,
                     const float *bs, float *C) {
    const int kt = AKF_DTYPE[dt].tile_k, Kp = AKF_ROUNDUP(K, kt), panels = AKF_ROUNDUP(N, 16) / 16;
    const size_t panel_bytes = (size_t)Kp * 16 * AKF_DTYPE[dt].elem_bytes;
    const size_t lda = (size_t)Kp / (dt == BF16 ? 1 : 2); /* widened A, 32-bit words per row */
    const int row_blocks = (M + MR - 1) / MR, kblocks = (Kp + KC - 1) / KC;
    /* A packed for every K block (ap: the blocks of kb at kb * a_block), in scratch: kept from the same product's
     * last claim, or widened (aw, for this call only) and packed */
    const size_t a_block = (size_t)row_blocks * MR * KC;
    int kept;
    uint32_t *ap = akf_scratch_a_kept(AKF_A_FORM(AKF_A_AVX2_BLOCKS, dt), M, K, A,
                                      sizeof(uint32_t) * a_block * (size_t)kblocks, &kept);
    uint32_t *aw = kept ? NULL : aligned_alloc(64, AKF_ROUNDUP(sizeof(uint32_t) * lda * (size_t)M, 64));
    if (!ap || (!kept && !aw)) { free(aw); return AKF_ERR_ARG; }
    int failed = 0;
#pragma omp parallel
    {
        const int nt = team_size(), t = team_rank();
        const int q0 = (int)((long)panels * t / nt), q1 = (int)((long)panels * (t + 1) / nt);
        char *bw = aligned_alloc(64, (size_t)NCP * KC * 64);
        if (!bw) {
#pragma omp atomic write
            failed = 1;
        }
        if (!kept) {
#pragma omp for schedule(static)
            for (int i = 0; i < M; i++) akf_widen_a_row(dt, A, K, Kp, i, aw + (size_t)i * lda);
#pragma omp for collapse(2) schedule(static)
            for (int kb = 0; kb < kblocks; kb++)
                for (int rb = 0; rb < row_blocks; rb++)
                    pack_a_block(dt, aw, lda, M, rb * MR, kb * KC, AKF_MIN(KC, Kp - kb * KC),
                                 ap + kb * a_block + (size_t)rb * MR * KC);
            /* the implicit barrier: every thread's A blocks are ready */
        }
        for (int kb = 0; kb < kblocks; kb++) {
            const int k0 = kb * KC, kc = AKF_MIN(KC, Kp - k0), steps = dt == BF16 ? kc : kc / 2;
            for (int p0 = q0; bw && p0 < q1; p0 += NCP) {
                const int np = AKF_MIN(NCP, q1 - p0);
                widen_b_block(dt, Bp, panel_bytes, S, p0, np, k0, kc, bw);
                for (int rb = 0; rb < row_blocks; rb++) {
                    const int r0 = rb * MR, R = AKF_MIN(MR, M - r0);
                    for (int i = 0; i < np; i++) {
                        const int c0 = (p0 + i) * 16, cols = AKF_MIN(16, N - c0);
                        const char *b = bw + (size_t)i * steps * 64;
                        const uint32_t *a = ap + kb * a_block + (size_t)rb * MR * KC;
                        if (dt == BF16) micro(BF16, steps, a, b, C, N, r0, R, c0, cols, kb == 0, kb == kblocks - 1, as, bs);
                        else micro(INT8, steps, a, b, C, N, r0, R, c0, cols, kb == 0, kb == kblocks - 1, as, bs);
                    }
                }
            }
        }
        free(bw);
    }
    free(aw);
    return failed ? AKF_ERR_ARG : AKF_OK;
}

static int gemm(int dt, int M, int N, int K, const void *A, const float *as, const void *Bp, const float *bs, float *C) {
    return M <= STREAM_M ? stream(dt, M, N, K, A, as, Bp, bs, C) : akf_avx2_blocked(dt, M, N, K, A, as, Bp, NULL, bs, C);
}

AKF_GEMM_ENTRY_POINTS(avx2)
#else
AKF_GEMM_NOT_BUILT(avx2)
#endif
