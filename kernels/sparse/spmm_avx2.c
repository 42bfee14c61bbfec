/* AVX2 sparse x dense (class `default`, the avx2 implementation), on the same SparAMX-style format as the AMX and
 * AVX-512 kernels. AVX2 has no VPEXPAND (VBMI2): each mask byte expands through a PSHUFB control looked up in a
 * 256-entry table (bf16: 8 pair halves = 16 bytes, int8: 8 bytes), the source pointer moving by the byte's popcount.
 * bf16 expands straight to fp32 (the table's control puts each value in the top half of a 32-bit slot) in the
 * pair layout's order, so a broadcast (a[k], a[k+1]) pair multiplies it with one FMA; int8 expands into the high byte of s16
 * lanes (256 x the value) and is multiplied with VPMADDWD (exact: the tile's sums are shifted back down).
 * M <= 2 (decode): expand into registers, accumulators stay in registers for the whole panel.
 * M > 2: each tile is expanded once into a 2 KB buffer and every row pair of A consumes it from L1, with the
 *        partial sums of the panel in a small per-thread buffer;
 * bf16, M >= BLOCKED_MIN_M (prefill): the dense kernel's blocked product, its B blocks expanded from the tiles.
 * All-zero tiles are skipped; threads split the panels by nonzeros (akf_sparse_thread_panels). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "akf_internal.h"

#if AKF_BUILT_avx2
#include <immintrin.h>

enum { BF16 = AKF_BF16, INT8 = AKF_INT8 };
/* bf16 products of this many rows or more run the dense kernel's blocking over tiles expanded a K block at a time:
 * the buffered path reads every row of the widened A for each tile, the whole of A from L3 once per panel. The builder
 * (avx2, 2048x5632 at 50 % zeros, ms, buffered -> blocked, dense for scale): 2 threads M=8 1.50 -> 2.39 (1.68), 16
 * 2.54 -> 2.94 (2.72), 17 2.62 -> 2.45 (2.49), 64 9.73 -> 7.33 (8.23), 128 22.1 -> 14.6 (15.8); 1 thread M=128 44.6
 * -> 28.0 (28.9): a pruned model's prefill had run 0.77-0.79x the dense model's. */
#define BLOCKED_MIN_M 17

/* PSHUFB controls: for mask byte m, output element i takes source element rank(i) (its index among the set bits
 * below it) or zero (0x80). Built once; plain integer code. */
/* bf16: 8 elements widened to fp32 in place (each bf16 into the top half of a 32-bit slot), slots 0-3 in the low
 * 128-bit lane and 4-7 in the high one: applied to the same 16 source bytes broadcast to both lanes. */
static uint8_t EXPAND_F32[256][32] __attribute__((aligned(64)));
/* int8: 8 elements into the high byte of 16-bit lanes (so each lane is the value times 256, exact in s16), source
 * indices moved up by the table's first index (0-8): the high lane of a 16-value chunk uses the popcount of the low
 * lane's byte, so both read one 16-byte window. */
static uint8_t EXPAND_S16[9][256][16] __attribute__((aligned(64)));
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void) {
    for (int m = 0; m < 256; m++) {
        int rank = 0;
        for (int i = 0; i < 8; i++) {
            const int set = (m >> i) & 1;
            uint8_t *slot = EXPAND_F32[m] + 4 * i; /* lane i / 4, slot i % 4: byte 4 * i either way */
            slot[0] = slot[1] = 0x80;
            slot[2] = set ? (uint8_t)(2 * rank) : 0x80;
            slot[3] = set ? (uint8_t)(2 * rank + 1) : 0x80;
            for (int shift = 0; shift <= 8; shift++) {
                EXPAND_S16[shift][m][2 * i] = 0x80;
                EXPAND_S16[shift][m][2 * i + 1] = set ? (uint8_t)(shift + rank) : 0x80;
            }
            rank += set;
        }
    }
}

/* One bf16 tile row, widened: x[j] = mask byte j's 8 values (columns 4j..4j+1 | 4j+2..4j+3, k and k+1 each) as
 * fp32 in the pair layout's own order; the same order as a broadcast (a[k], a[k+1]) pair, so one FMA each. */
static inline __attribute__((always_inline)) void expand_bf16(uint32_t m, const uint16_t *vp, __m256 x[4]) {
    /* table offsets (32 bytes an entry) and source offsets (the popcount of the bytes below) for the 4 bytes */
    const size_t ctrl[4] = {(m & 0xFFu) * 32, ((m >> 8) & 0xFFu) * 32, ((m >> 16) & 0xFFu) * 32, (m >> 24) * 32};
    const int off[4] = {0, __builtin_popcount(m & 0xFFu), __builtin_popcount(m & 0xFFFFu),
                        __builtin_popcount(m & 0xFFFFFFu)};
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
        x[j] = _mm256_castsi256_ps(_mm256_shuffle_epi8(
            _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(vp + off[j]))),
            _mm256_load_si256((const __m256i *)((const char *)EXPAND_F32 + ctrl[j]))));
}

/* One int8 tile row: 64 mask bits -> q[j] = columns 4j..4j+3 x 4 k as s16 lanes holding 256 x the value (one
 * PSHUFB per 16 values; the kernels shift the sums back down once per tile, exactly: they are multiples of 256). */
static inline __attribute__((always_inline)) void expand_int8(uint64_t m, const int8_t *vp, __m256i q[4]) {
    int off = 0;
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        const unsigned lo = (unsigned)(m >> (16 * j)) & 0xFF, hi = (unsigned)(m >> (16 * j + 8)) & 0xFF;
        const int pl = __builtin_popcount(lo);
        const __m256i ctrl = _mm256_loadu2_m128i((const __m128i *)EXPAND_S16[pl][hi], (const __m128i *)EXPAND_S16[0][lo]);
        q[j] = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(vp + off))), ctrl);
        off += pl + __builtin_popcount(hi);
    }
}

/* After a tile: acc += tile / 256 (each lane of the tile's sums is a multiple of 256: exact; and at most
 * 16 rows x 2 x 128 x 32768 = 2^27 in magnitude, so a tile never overflows). */
static inline __attribute__((always_inline)) void flush_int8(int R, __m256i tile[2][4], __m256i acc[2][4]) {
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_srai_epi32(tile[r][j], 8));
            tile[r][j] = _mm256_setzero_si256();
        }
}

static inline __attribute__((always_inline)) void prefetch_tile(int dt, const akf_sparse *S, size_t tile, size_t end) {
    if (tile + AKF_SPARSE_PREFETCH < end) {
        const size_t ahead = tile + AKF_SPARSE_PREFETCH, es = AKF_DTYPE[dt].elem_bytes, ms = AKF_DTYPE[dt].mask_bytes;
        AKF_PREFETCH_RANGE((const char *)S->values + S->tile_off[ahead] * es,
                           (const char *)S->values + S->tile_off[ahead + 1] * es);
        AKF_PREFETCH_RANGE((const char *)S->masks + ahead * 16 * ms, (const char *)S->masks + (ahead + 1) * 16 * ms);
    }
}

/* Add one expanded row (pair g of k) times R rows of widened A into acc[r][j] (mask byte j's columns). */
static inline __attribute__((always_inline)) void fma_bf16(int R, const __m256 x[4], const float *a, size_t lda, int g,
                                                            __m256 acc[2][4]) {
#pragma GCC unroll 2
    for (int r = 0; r < R; r++) {
        const __m256 pair = _mm256_castpd_ps(_mm256_broadcast_sd((const double *)(a + (size_t)r * lda + 2 * g)));
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) acc[r][j] = _mm256_fmadd_ps(x[j], pair, acc[r][j]);
    }
}

static inline __attribute__((always_inline)) void madd_int8(int R, const __m256i q[4], const int16_t *a, size_t lda,
                                                             int g, __m256i acc[2][4]) {
#pragma GCC unroll 2
    for (int r = 0; r < R; r++) {
        const __m256i aq = _mm256_castpd_si256(_mm256_broadcast_sd((const double *)(a + (size_t)r * lda + 4 * (size_t)g)));
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_madd_epi16(q[j], aq));
    }
}

/* The 16 column results of accumulator row r: fp32 (bf16) or int32 bits (int8). */
static inline __attribute__((always_inline)) void finish_bf16(const __m256 acc[4], __m256 *lo, __m256 *hi) {
    /* acc[j]: (column, k parity) pairs of columns 4j..4j+3; hadd sums each pair, the permute restores the order */
    *lo = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_hadd_ps(acc[0], acc[1])), 0xD8));
    *hi = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_hadd_ps(acc[2], acc[3])), 0xD8));
}
static inline __attribute__((always_inline)) void finish_int8(const __m256i acc[4], __m256 *lo, __m256 *hi) {
    *lo = _mm256_castsi256_ps(_mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[0], acc[1]), 0xD8));
    *hi = _mm256_castsi256_ps(_mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[2], acc[3]), 0xD8));
}

static void store_row(int dt, __m256 lo, __m256 hi, float *C, int N, int row, int c0, const float *as, const float *bs) {
    float buf[16] __attribute__((aligned(32))), b[16] = {0};
    const int cols = AKF_MIN(16, N - c0);
    if (dt == INT8) {
        memcpy(b, bs + c0, sizeof(float) * (size_t)cols);
        const __m256 a = _mm256_set1_ps(as[row]);
        lo = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_castps_si256(lo)), _mm256_mul_ps(a, _mm256_loadu_ps(b)));
        hi = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_castps_si256(hi)), _mm256_mul_ps(a, _mm256_loadu_ps(b + 8)));
    }
    _mm256_store_ps(buf, lo);
    _mm256_store_ps(buf + 8, hi);
    memcpy(C + (size_t)row * N + c0, buf, sizeof(float) * (size_t)cols);
}

/* M <= 2: R rows x panel p, expanding straight into registers. */
static inline __attribute__((always_inline)) void panel_fused(int dt, int R, const akf_sparse *S, int p, const void *aw,
                                                               size_t lda, float *C, const float *as, const float *bs) {
    const int KT = S->ktiles;
    const size_t first = (size_t)p * KT, end = first + KT;
    /* accf[parity][r][j]: with one row of A, even and odd tile rows feed separate chains */
    __m256 accf[2][2][4], out[2][2];
    __m256i acci[2][4], acct[2][4]; /* int8: the sums so far, and this tile's (x 256) */
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) accf[i / 8][(i / 4) % 2][i % 4] = _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) acci[i / 4][i % 4] = acct[i / 4][i % 4] = _mm256_setzero_si256();
    for (size_t tile = first; tile < end; tile++) {
        prefetch_tile(dt, S, tile, end);
        if (S->tile_off[tile + 1] == S->tile_off[tile]) continue; /* all-zero tile: skipped */
        const int g0 = (int)(tile - first) * 16;
        if (dt == BF16) {
            const uint16_t *vp = (const uint16_t *)S->values + S->tile_off[tile];
            const uint32_t *masks = (const uint32_t *)S->masks + tile * 16;
            for (int r = 0; r < 16; r += 2)
#pragma GCC unroll 2
                for (int par = 0; par < 2; par++) {
                    __m256 x[4];
                    expand_bf16(masks[r + par], vp, x);
                    vp += __builtin_popcount(masks[r + par]);
                    fma_bf16(R, x, aw, lda, g0 + r + par, accf[R == 1 ? par : 0]);
                }
        } else {
            const int8_t *vp = (const int8_t *)S->values + S->tile_off[tile];
            const uint64_t *masks = (const uint64_t *)S->masks + tile * 16;
#pragma GCC unroll 2
            for (int r = 0; r < 16; r++) {
                __m256i q[4];
                expand_int8(masks[r], vp, q);
                vp += __builtin_popcountll(masks[r]);
                madd_int8(R, q, aw, lda, g0 + r, acct);
            }
            flush_int8(R, acct, acci);
        }
    }
    for (int r = 0; r < R; r++) {
        if (dt == BF16) {
            __m256 sum[4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) sum[j] = _mm256_add_ps(accf[0][r][j], accf[1][r][j]);
            finish_bf16(sum, &out[r][0], &out[r][1]);
        }
        else finish_int8(acci[r], &out[r][0], &out[r][1]);
    }
    for (int r = 0; r < R; r++) store_row(dt, out[r][0], out[r][1], C, S->N, r, p * 16, as, bs);
}

/* R rows of A (from a) times one expanded tile in buf (16 rows x 128 bytes), added to their partial sums in part
 * (128 bytes a row: bf16 4 x 8 fp32, int8 4 x 8 int32). */
static inline __attribute__((always_inline)) void consume(int dt, int R, const char *buf, char *part, const char *a,
                                                           size_t lda, int g0) {
    if (dt == BF16) {
        __m256 acc[2][4];
#pragma GCC unroll 8
        for (int i = 0; i < 4 * R; i++) acc[i / 4][i % 4] = _mm256_load_ps((const float *)(part + (i / 4) * 128) + 8 * (i % 4));
        for (int r = 0; r < 16; r++) {
            __m256 x[4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) x[j] = _mm256_load_ps((const float *)(buf + r * 128 + 32 * j));
            fma_bf16(R, x, (const float *)a, lda, g0 + r, acc);
        }
#pragma GCC unroll 8
        for (int i = 0; i < 4 * R; i++) _mm256_store_ps((float *)(part + (i / 4) * 128) + 8 * (i % 4), acc[i / 4][i % 4]);
    } else {
        __m256i acc[2][4], tsum[2][4];
#pragma GCC unroll 8
        for (int i = 0; i < 4 * R; i++) {
            acc[i / 4][i % 4] = _mm256_load_si256((const __m256i *)(part + (i / 4) * 128 + 32 * (i % 4)));
            tsum[i / 4][i % 4] = _mm256_setzero_si256();
        }
        for (int r = 0; r < 16; r++) {
            __m256i q[4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) q[j] = _mm256_load_si256((const __m256i *)(buf + r * 128 + 32 * j));
            madd_int8(R, q, (const int16_t *)a, lda, g0 + r, tsum);
        }
        flush_int8(R, tsum, acc);
#pragma GCC unroll 8
        for (int i = 0; i < 4 * R; i++) _mm256_store_si256((__m256i *)(part + (i / 4) * 128 + 32 * (i % 4)), acc[i / 4][i % 4]);
    }
}

/* M > 2: expand each tile once into buf (16 dense packed rows), then every row pair consumes it. part holds the
 * panel's partial sums: per row, bf16 4 x 8 floats (half x even/odd), int8 4 x 8 int32. */
static inline __attribute__((always_inline)) void panel_buffered(int dt, int M, const akf_sparse *S, int p, const void *aw,
                                                                  size_t lda, float *C, const float *as, const float *bs,
                                                                  char *buf, char *part) {
    const int KT = S->ktiles;
    const size_t first = (size_t)p * KT, end = first + KT;
    memset(part, 0, (size_t)M * 128);
    for (size_t tile = first; tile < end; tile++) {
        prefetch_tile(dt, S, tile, end);
        if (S->tile_off[tile + 1] == S->tile_off[tile]) continue;
        const int g0 = (int)(tile - first) * 16;
        if (dt == BF16) {
            const uint16_t *vp = (const uint16_t *)S->values + S->tile_off[tile];
            const uint32_t *masks = (const uint32_t *)S->masks + tile * 16;
            for (int r = 0; r < 16; r++) {
                __m256 x[4];
                expand_bf16(masks[r], vp, x);
                vp += __builtin_popcount(masks[r]);
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) _mm256_store_ps((float *)(buf + r * 128 + 32 * j), x[j]);
            }
        } else {
            const int8_t *vp = (const int8_t *)S->values + S->tile_off[tile];
            const uint64_t *masks = (const uint64_t *)S->masks + tile * 16;
            for (int r = 0; r < 16; r++) {
                __m256i q[4];
                expand_int8(masks[r], vp, q);
                vp += __builtin_popcountll(masks[r]);
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) _mm256_store_si256((__m256i *)(buf + r * 128 + 32 * j), q[j]);
            }
        }
        for (int r0 = 0; r0 < M; r0 += 2) {
            if (M - r0 >= 2) consume(dt, 2, buf, part + (size_t)r0 * 128, (const char *)aw + (size_t)r0 * lda * (dt == BF16 ? 4 : 2), lda, g0);
            else consume(dt, 1, buf, part + (size_t)r0 * 128, (const char *)aw + (size_t)r0 * lda * (dt == BF16 ? 4 : 2), lda, g0);
        }
    }
    for (int r = 0; r < M; r++) {
        __m256 lo, hi;
        if (dt == BF16) {
            __m256 acc[4];
            for (int j = 0; j < 4; j++) acc[j] = _mm256_load_ps((const float *)(part + (size_t)r * 128) + 8 * j);
            finish_bf16(acc, &lo, &hi);
        } else {
            __m256i acc[4];
            for (int j = 0; j < 4; j++) acc[j] = _mm256_load_si256((const __m256i *)(part + (size_t)r * 128 + 32 * j));
            finish_int8(acc, &lo, &hi);
        }
        store_row(dt, lo, hi, C, S->N, r, p * 16, as, bs);
    }
}

void akf_avx2_sparse_widen(const akf_sparse *S, int p, int k0, int kc, char *out) {
    pthread_once(&tables_once, build_tables);
    for (int t = k0 / AKF_BF16_KT; t < (k0 + kc) / AKF_BF16_KT; t++, out += 16 * 128) {
        const size_t tile = (size_t)p * S->ktiles + t;
        if (S->tile_off[tile + 1] == S->tile_off[tile]) {
            memset(out, 0, 16 * 128);
            continue;
        }
        const uint16_t *vp = (const uint16_t *)S->values + S->tile_off[tile];
        const uint32_t *masks = (const uint32_t *)S->masks + tile * 16;
        for (int r = 0; r < 16; r++) {
            __m256 x[4];
            expand_bf16(masks[r], vp, x);
            vp += __builtin_popcount(masks[r]);
            /* (column, k parity) pairs -> k even then odd, columns 0-7 and 8-15 (finish_bf16's reordering), from the
             * registers: the tile expanded as panel_buffered expands it and reordered from that buffer (the expansion
             * written once) ran the 17-row product 1.2-1.3x slower (the builder, 2 threads, 2048x5632, 50 % zeros) */
            float *o = (float *)(out + r * 128);
            for (int h = 0; h < 2; h++) {
                _mm256_store_ps(o + 8 * h, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                               _mm256_castps_pd(_mm256_shuffle_ps(x[2 * h], x[2 * h + 1], 0x88)), 0xD8)));
                _mm256_store_ps(o + 16 + 8 * h, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                                    _mm256_castps_pd(_mm256_shuffle_ps(x[2 * h], x[2 * h + 1], 0xDD)), 0xD8)));
            }
        }
    }
}

static int spmm(int dt, int M, const void *A, const float *as, const akf_sparse *S, const float *bs, float *C) {
    if (dt == BF16 && M >= BLOCKED_MIN_M) return akf_avx2_blocked(BF16, M, S->N, S->K, A, NULL, NULL, S, NULL, C);
    pthread_once(&tables_once, build_tables);
    /* widened A: fp32 (bf16) or s16 (int8) values, lda in values */
    const size_t lda = (size_t)S->Kp, elem = dt == BF16 ? 4 : 2;
    char *aw = aligned_alloc(64, AKF_ROUNDUP(lda * elem * (size_t)M, 64));
    if (!aw) return AKF_ERR_ARG;
    for (int i = 0; i < M; i++) akf_widen_a_row(dt, A, S->K, S->Kp, i, aw + (size_t)i * lda * elem);
    int failed = 0;
#pragma omp parallel
    {
        int p0, p1;
        akf_sparse_thread_panels(S, &p0, &p1);
        char *buf = M > 2 ? aligned_alloc(64, 2048 + AKF_ROUNDUP((size_t)M * 128, 64)) : NULL;
        if (M > 2 && !buf) {
#pragma omp atomic write
            failed = 1;
        }
        for (int p = p0; p < p1 && (M <= 2 || buf); p++) {
            /* each row's C is addressed relative to its own row: shift C and the scales for the row pair */
            if (M > 2) {
                if (dt == BF16) panel_buffered(BF16, M, S, p, aw, lda, C, as, bs, buf, buf + 2048);
                else panel_buffered(INT8, M, S, p, aw, lda, C, as, bs, buf, buf + 2048);
                continue;
            }
            for (int r0 = 0; r0 < M; r0 += 2) {
                const char *a = aw + (size_t)r0 * lda * elem;
                float *c = C + (size_t)r0 * S->N;
                const float *ar = as ? as + r0 : NULL;
                if (dt == BF16) {
                    if (M - r0 >= 2) panel_fused(BF16, 2, S, p, a, lda, c, ar, bs);
                    else panel_fused(BF16, 1, S, p, a, lda, c, ar, bs);
                } else if (M - r0 >= 2) panel_fused(INT8, 2, S, p, a, lda, c, ar, bs);
                else panel_fused(INT8, 1, S, p, a, lda, c, ar, bs);
            }
        }
        free(buf);
    }
    free(aw);
    return failed ? AKF_ERR_ARG : AKF_OK;
}

AKF_SPMM_ENTRY_POINTS(avx2)
#else
AKF_SPMM_NOT_BUILT(avx2)
#endif
