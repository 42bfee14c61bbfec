/* AMX sparse x dense (SparAMX-style), class `amx`. Per non-empty 16x64-byte tile of B: expand each row's nonzeros
 * with VPEXPANDW/VPEXPANDB (AVX512-VBMI2) under its bitmask into a 1 KB buffer, TILELOADD it, and multiply every
 * 16-row block of A with TDPBF16PS / TDPBSSD. All-zero tiles are skipped; threads get panel ranges of equal
 * nonzero work (akf_sparse_split), not equal column counts. Two expansion buffers alternate so that expanding
 * the next tile overlaps the tile multiply of the current one. */
#include <stdlib.h>
#include <string.h>

#include "akf_internal.h"

#if AKF_BUILT_amx
#include <immintrin.h>

enum { BF16 = AKF_BF16, INT8 = AKF_INT8 };

/* C tiles 0-3 and A tile 4 hold the block's rows (fewer than 16 for decode); the expanded B tiles are full. */
static void load_config(int rows) { akf_amx_load_config(rows, 5); }

static inline __attribute__((always_inline)) void expand_tile(int dt, const void *masks, const char *vp, char *buf) {
    for (int r = 0; r < 16; r++) {
        if (dt == BF16) {
            uint32_t m = ((const uint32_t *)masks)[r];
            _mm512_store_si512(buf + r * 64, _mm512_maskz_expand_epi16((__mmask32)m, _mm512_loadu_si512(vp)));
            vp += 2 * __builtin_popcount(m);
        } else {
            uint64_t m = ((const uint64_t *)masks)[r];
            _mm512_store_si512(buf + r * 64, _mm512_maskz_expand_epi8((__mmask64)m, _mm512_loadu_si512(vp)));
            vp += __builtin_popcountll(m);
        }
    }
}

static inline __attribute__((always_inline)) void tdp(int dt, int c) {
    /* tile numbers must be constants */
    if (dt == BF16) {
        switch (c) { case 0: _tile_dpbf16ps(0, 4, 6); break; case 1: _tile_dpbf16ps(1, 4, 6); break;
                     case 2: _tile_dpbf16ps(2, 4, 6); break; default: _tile_dpbf16ps(3, 4, 6); break; }
    } else {
        switch (c) { case 0: _tile_dpbssd(0, 4, 6); break; case 1: _tile_dpbssd(1, 4, 6); break;
                     case 2: _tile_dpbssd(2, 4, 6); break; default: _tile_dpbssd(3, 4, 6); break; }
    }
}

static inline __attribute__((always_inline)) void store_c(int c, void *buf) {
    switch (c) { case 0: _tile_stored(0, buf, 64); break; case 1: _tile_stored(1, buf, 64); break;
                 case 2: _tile_stored(2, buf, 64); break; default: _tile_stored(3, buf, 64); break; }
}

static int spmm(int dt, int M, const void *A, const float *as, const akf_sparse *S, const float *bs, float *C) {
    const int kt = AKF_DTYPE[dt].tile_k, esize = AKF_DTYPE[dt].elem_bytes;
    const int KT = S->ktiles, MB = AKF_ROUNDUP(M, 16) / 16, N = S->N;
    const size_t mask_size = AKF_DTYPE[dt].mask_bytes;
    int kept;
    char *Ap = akf_scratch_a_tiles(M, S->K, kt, esize, A, &kept);
    if (!Ap) return AKF_ERR_ARG;
#pragma omp parallel
    {
        if (!kept) akf_tile_a_share(M, S->K, kt, esize, A, Ap);
        int p0, p1;
        akf_sparse_thread_panels(S, &p0, &p1);
        load_config(MB == 1 ? M : 16);
        char buf[2][1024] __attribute__((aligned(64)));
        int32_t cbuf[256] __attribute__((aligned(64)));
        int flip = 0;
        for (int mc = 0; mc < MB; mc += 4) {
            const int nb = AKF_MIN(4, MB - mc);
            for (int p = p0; p < p1; p++) {
                for (int c = 0; c < nb; c++) switch (c) { case 0: _tile_zero(0); break; case 1: _tile_zero(1); break;
                                                          case 2: _tile_zero(2); break; default: _tile_zero(3); }
                for (int t = 0; t < KT; t++) {
                    const size_t tile = (size_t)p * KT + t;
                    if (t + AKF_SPARSE_PREFETCH < KT) {
                        const size_t ahead = tile + AKF_SPARSE_PREFETCH;
                        AKF_PREFETCH_RANGE((const char *)S->values + S->tile_off[ahead] * (size_t)esize,
                                           (const char *)S->values + S->tile_off[ahead + 1] * (size_t)esize);
                        AKF_PREFETCH_RANGE((const char *)S->masks + ahead * 16 * mask_size,
                                           (const char *)S->masks + (ahead + 1) * 16 * mask_size);
                    }
                    if (S->tile_off[tile + 1] == S->tile_off[tile]) continue; /* all-zero tile: skipped */
                    const char *vp = (const char *)S->values + S->tile_off[tile] * (size_t)esize;
                    const char *masks = (const char *)S->masks + tile * 16 * mask_size;
                    if (dt == BF16) expand_tile(BF16, masks, vp, buf[flip]);
                    else expand_tile(INT8, masks, vp, buf[flip]);
                    _tile_loadd(6, buf[flip], 64);
                    flip ^= 1;
                    for (int c = 0; c < nb; c++) {
                        _tile_loadd(4, Ap + ((size_t)(mc + c) * KT + t) * 1024, 64);
                        if (dt == BF16) tdp(BF16, c); else tdp(INT8, c);
                    }
                }
                for (int c = 0; c < nb; c++) {
                    store_c(c, cbuf);
                    const int r0 = (mc + c) * 16, rows = AKF_MIN(16, M - r0), c0 = p * 16, cols = AKF_MIN(16, N - c0);
                    const __mmask16 m = (__mmask16)((1u << cols) - 1u);
                    for (int r = 0; r < rows; r++) {
                        __m512 v = dt == BF16 ? _mm512_load_ps((const float *)cbuf + r * 16)
                                              : _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cbuf + r * 16)),
                                                              _mm512_mul_ps(_mm512_set1_ps(as[r0 + r]),
                                                                            _mm512_maskz_loadu_ps(m, bs + c0)));
                        _mm512_mask_storeu_ps(C + (size_t)(r0 + r) * N + c0, m, v);
                    }
                }
            }
        }
        _tile_release();
    }
    return AKF_OK;
}

AKF_SPMM_ENTRY_POINTS(amx)
#else
AKF_SPMM_NOT_BUILT(amx)
#endif
