/* AMX dense GEMM, bf16 (TDPBF16PS) and int8 (TDPBSSD), class `amx`.
 * Blocking: 2x2 output tiles (32 rows x 32 columns) in tmm0-3, two A tiles in tmm4-5, two B tiles in tmm6-7; the
 * tile config is loaded once per thread; each output tile is stored once, after the whole K loop (TILEZERO first).
 * A is copied once into tile blocks (contiguous 1 KB tiles); B is prepacked. Threads split the 32-column blocks;
 * within a thread a group of column blocks that fits L2 is swept for every 32-row block. */
#include <stdlib.h>
#include <string.h>

#include "akf_internal.h"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AMX_INT8__)
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

int akf_amx_built(void) { return 1; }

struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

static void load_full_config(void) {
    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
}

enum { BF16, INT8 };
#ifndef AKF_PREFETCH_TILES
#define AKF_PREFETCH_TILES 4
#endif

/* One block: nm (1|2) A tile streams x nn (1|2) B panel streams, KT tiles deep. Constant-folded per call site. */
static inline __attribute__((always_inline)) void block(int dt, int nm, int nn, int KT, const char *a0, const char *a1,
                                                         const char *b0, const char *b1) {
    _tile_zero(0);
    if (nn > 1) _tile_zero(1);
    if (nm > 1) _tile_zero(2);
    if (nm > 1 && nn > 1) _tile_zero(3);
    for (int t = 0; t < KT; t++) {
        const size_t o = (size_t)t * 1024;
        /* bring the next k-step's tiles into L1 while this one computes (tile loads from L2 stall the pipe) */
        const size_t n = o + AKF_PREFETCH_TILES * 1024;
        for (int l = 0; l < 1024; l += 64) {
            _mm_prefetch(a0 + n + l, _MM_HINT_T0);
            _mm_prefetch(b0 + n + l, _MM_HINT_T0);
            if (nn > 1) _mm_prefetch(b1 + n + l, _MM_HINT_T0);
            if (nm > 1) _mm_prefetch(a1 + n + l, _MM_HINT_T0);
        }
        _tile_loadd(4, a0 + o, 64);
        _tile_loadd(6, b0 + o, 64);
        if (dt == BF16) _tile_dpbf16ps(0, 4, 6); else _tile_dpbssd(0, 4, 6);
        if (nn > 1) {
            _tile_loadd(7, b1 + o, 64);
            if (dt == BF16) _tile_dpbf16ps(1, 4, 7); else _tile_dpbssd(1, 4, 7);
        }
        if (nm > 1) {
            _tile_loadd(5, a1 + o, 64);
            if (dt == BF16) _tile_dpbf16ps(2, 5, 6); else _tile_dpbssd(2, 5, 6);
            if (nn > 1) { if (dt == BF16) _tile_dpbf16ps(3, 5, 7); else _tile_dpbssd(3, 5, 7); }
        }
    }
}

/* Write one 16x16 output tile (fp32 for bf16; int32 scaled to fp32 for int8), clipped to M x N. */
static inline __attribute__((always_inline)) void store(int dt, int tile, int M, int N, int r0, int c0, float *C,
                                                         const float *as, const float *bs) {
    int rows = AKF_MIN(16, M - r0), cols = AKF_MIN(16, N - c0);
    if (dt == BF16 && rows == 16 && cols == 16) {
        switch (tile) {
        case 0: _tile_stored(0, C + (size_t)r0 * N + c0, (size_t)N * 4); break;
        case 1: _tile_stored(1, C + (size_t)r0 * N + c0, (size_t)N * 4); break;
        case 2: _tile_stored(2, C + (size_t)r0 * N + c0, (size_t)N * 4); break;
        default: _tile_stored(3, C + (size_t)r0 * N + c0, (size_t)N * 4); break;
        }
        return;
    }
    int32_t buf[256] __attribute__((aligned(64)));
    switch (tile) {
    case 0: _tile_stored(0, buf, 64); break;
    case 1: _tile_stored(1, buf, 64); break;
    case 2: _tile_stored(2, buf, 64); break;
    default: _tile_stored(3, buf, 64); break;
    }
    for (int r = 0; r < rows; r++) {
        float *c = C + (size_t)(r0 + r) * N + c0;
        if (dt == BF16) memcpy(c, (const float *)buf + r * 16, (size_t)cols * 4);
        else {
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(buf + r * 16)),
                                     _mm512_mul_ps(_mm512_set1_ps(as[r0 + r]), _mm512_maskz_loadu_ps(
                                         (__mmask16)((1u << cols) - 1u), bs + c0)));
            _mm512_mask_storeu_ps(c, (__mmask16)((1u << cols) - 1u), v);
        }
    }
}

static int gemm(int dt, int M, int N, int K, const void *A, const float *as, const void *Bp, const float *bs, float *C) {
    const int kt = dt == BF16 ? AKF_BF16_KT : AKF_INT8_KT, esize = dt == BF16 ? 2 : 1;
    const int KT = AKF_ROUNDUP(K, kt) / kt, MB = AKF_ROUNDUP(M, 16) / 16, panels = AKF_ROUNDUP(N, 16) / 16;
    const int pairs = (panels + 1) / 2;
    const size_t panel_bytes = (size_t)KT * 1024;
    /* column-block group kept in L2 while every row block passes over it (about 1 MB of B) */
    const int group = AKF_MIN(pairs, (int)((1u << 20) / (2 * panel_bytes)) > 0 ? (int)((1u << 20) / (2 * panel_bytes)) : 1);
    char *Ap = aligned_alloc(64, AKF_ROUNDUP(akf_tile_a_bytes(M, K, kt, esize), 64));
    if (!Ap) return AKF_ERR_ARG;
    akf_tile_a(M, K, kt, esize, A, Ap);
    const char *B = Bp;
#pragma omp parallel
    {
        load_full_config();
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        const int q0 = (int)((long)pairs * t / nt), q1 = (int)((long)pairs * (t + 1) / nt);
        for (int g = q0; g < q1; g += group)
            for (int mb = 0; mb < MB; mb += 2)
                for (int q = g; q < AKF_MIN(g + group, q1); q++) {
                    const int p = 2 * q, nm = mb + 1 < MB ? 2 : 1, nn = p + 1 < panels ? 2 : 1;
                    const char *a0 = Ap + (size_t)mb * panel_bytes, *a1 = a0 + panel_bytes;
                    const char *b0 = B + (size_t)p * panel_bytes, *b1 = b0 + panel_bytes;
                    if (dt == BF16) {
                        if (nm == 2 && nn == 2) block(BF16, 2, 2, KT, a0, a1, b0, b1);
                        else if (nm == 2) block(BF16, 2, 1, KT, a0, a1, b0, b1);
                        else if (nn == 2) block(BF16, 1, 2, KT, a0, a1, b0, b1);
                        else block(BF16, 1, 1, KT, a0, a1, b0, b1);
                    } else {
                        if (nm == 2 && nn == 2) block(INT8, 2, 2, KT, a0, a1, b0, b1);
                        else if (nm == 2) block(INT8, 2, 1, KT, a0, a1, b0, b1);
                        else if (nn == 2) block(INT8, 1, 2, KT, a0, a1, b0, b1);
                        else block(INT8, 1, 1, KT, a0, a1, b0, b1);
                    }
                    for (int i = 0; i < nm; i++)
                        for (int j = 0; j < nn; j++) {
                            if (dt == BF16) store(BF16, i * 2 + j, M, N, (mb + i) * 16, (p + j) * 16, C, as, bs);
                            else store(INT8, i * 2 + j, M, N, (mb + i) * 16, (p + j) * 16, C, as, bs);
                        }
                }
        _tile_release();
    }
    free(Ap);
    return AKF_OK;
}

int akf_gemm_bf16_amx(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {
    return gemm(BF16, M, N, K, A, NULL, Bp, NULL, C);
}

int akf_gemm_int8_amx(int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp, const float *bs,
                      float *C) {
    return gemm(INT8, M, N, K, A, as, Bp, bs, C);
}
#else
int akf_amx_built(void) { return 0; }
int akf_gemm_bf16_amx(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {
    (void)M; (void)N; (void)K; (void)A; (void)Bp; (void)C;
    return AKF_ERR_NOT_BUILT;
}
int akf_gemm_int8_amx(int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp, const float *bs,
                      float *C) {
    (void)M; (void)N; (void)K; (void)A; (void)as; (void)Bp; (void)bs; (void)C;
    return AKF_ERR_NOT_BUILT;
}
#endif
