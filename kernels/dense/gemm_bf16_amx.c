/* AMX BF16 GEMM (class `amx`: the only units that get -mamx-*). Tiles: C 16x16 fp32, A 16 rows x 32 bf16,
 * B 16 pair-rows x 16 columns from the packed layout. The tile config is loaded once per thread; edge blocks
 * of A are copied into a zero-padded buffer so that no tile load reads past the matrix. */
#include <string.h>

#include "akf_internal.h"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <immintrin.h>

int akf_amx_built(void) { return 1; }

struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

static void load_config(void) {
    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 3; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
}

int akf_gemm_bf16_amx(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {
    const int Kp = AKF_ROUNDUP(K, 32), mblocks = (M + 15) / 16, panels = (N + 15) / 16;
    const size_t panel_elems = (size_t)Kp * 16;
#pragma omp parallel
    {
        load_config();
        uint16_t abuf[16 * 32];
        float cbuf[16 * 16];
#pragma omp for collapse(2) schedule(static)
        for (int mb = 0; mb < mblocks; mb++)
            for (int p = 0; p < panels; p++) {
                const int rows = M - mb * 16 < 16 ? M - mb * 16 : 16;
                const uint16_t *b = Bp + (size_t)p * panel_elems;
                _tile_zero(0);
                for (int k0 = 0; k0 < Kp; k0 += 32) {
                    const uint16_t *a = A + (size_t)mb * 16 * K + k0;
                    size_t stride = (size_t)K * 2;
                    if (rows < 16 || k0 + 32 > K) {
                        int kk = K - k0 < 32 ? K - k0 : 32;
                        memset(abuf, 0, sizeof abuf);
                        for (int r = 0; r < rows; r++) memcpy(abuf + r * 32, a + (size_t)r * K, (size_t)kk * 2);
                        a = abuf;
                        stride = 64;
                    }
                    _tile_loadd(1, a, stride);
                    _tile_loadd(2, b + (size_t)k0 * 16, 64);
                    _tile_dpbf16ps(0, 1, 2);
                }
                _tile_stored(0, cbuf, 64);
                const int cols = N - p * 16 < 16 ? N - p * 16 : 16;
                for (int r = 0; r < rows; r++)
                    memcpy(C + (size_t)(mb * 16 + r) * N + (size_t)p * 16, cbuf + r * 16, (size_t)cols * 4);
            }
        _tile_release();
    }
    return AKF_OK;
}
#else
int akf_amx_built(void) { return 0; }
int akf_gemm_bf16_amx(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {
    (void)M; (void)N; (void)K; (void)A; (void)Bp; (void)C;
    return AKF_ERR_NOT_BUILT;
}
#endif
