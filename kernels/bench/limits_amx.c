/* Tile peak (class `amx`): a loop of independent tile ops (six accumulators, operands already in tiles), per
 * thread, all threads at once. The operands are random values like the kernels see: the multiplier's power, and so
 * its clock, depends on the data: zeros ran about 20 % faster than random bf16 here (so `zeros` is reported as
 * information only). The unit needs a warm-up: a measurement after 0.2 s of tile work read 1079-1608 GFLOP/s where
 * a warm one reads 2290-2750, so the first measurement in a process, and the first with more threads than before,
 * first runs the loop for a full second. A third mode runs the dense kernel's own step on L1-resident operands
 * (`tile_block_*`): the part of the gap to the peak that the core loop itself leaves. What the
 * dense kernels are measured against, in the same run. */
#include <string.h>

#include "akf_internal.h"

#if AKF_BUILT_amx
#include <immintrin.h>

static void loop(int dt, long iters) {
    for (long i = 0; i < iters; i++) {
        if (dt == AKF_BF16) {
            _tile_dpbf16ps(0, 6, 7); _tile_dpbf16ps(1, 6, 7); _tile_dpbf16ps(2, 6, 7);
            _tile_dpbf16ps(3, 6, 7); _tile_dpbf16ps(4, 6, 7); _tile_dpbf16ps(5, 6, 7);
        } else {
            _tile_dpbssd(0, 6, 7); _tile_dpbssd(1, 6, 7); _tile_dpbssd(2, 6, 7);
            _tile_dpbssd(3, 6, 7); _tile_dpbssd(4, 6, 7); _tile_dpbssd(5, 6, 7);
        }
    }
}

/* The dense kernel's inner step as it runs there (2x2 accumulators, two A and two B tiles loaded per step, in its
 * order), its operands cycling through 16 KB that stay in L1: what the kernel could reach if L2 and L3 cost
 * nothing. */
static void block_loop(int dt, long iters, const unsigned char *ops) {
    for (long i = 0; i < iters; i++) {
        const unsigned char *p = ops + (size_t)(i & 3) * 4096;
        _tile_loadd(4, p, 64);
        _tile_loadd(6, p + 1024, 64);
        if (dt == AKF_BF16) _tile_dpbf16ps(0, 4, 6); else _tile_dpbssd(0, 4, 6);
        _tile_loadd(7, p + 2048, 64);
        if (dt == AKF_BF16) _tile_dpbf16ps(1, 4, 7); else _tile_dpbssd(1, 4, 7);
        _tile_loadd(5, p + 3072, 64);
        if (dt == AKF_BF16) { _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7); }
        else { _tile_dpbssd(2, 5, 6); _tile_dpbssd(3, 5, 7); }
    }
}

double akf_tile_peak_amx(int dtype, int mode, int threads, double seconds) {
    /* warm up (a second, when more threads than ever before run it), calibrate (about `seconds`), then time all
     * threads for about `seconds` */
    static int warm = 0; /* the most threads warmed up so far: more threads bring cold cores */
    long iters = 2000;
    double elapsed = 0.0, per_op = 16.0 * 16 * AKF_DTYPE[dtype].tile_k * 2;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = akf_now(), t_end = 0.0;
#pragma omp parallel num_threads(threads)
        {
            akf_amx_load_config(16, 8);
            unsigned char operand[16 * 1024] __attribute__((aligned(64)));
            uint32_t state = 2463534242u;
            for (int i = 0; i < (int)sizeof operand; i++) {
                state ^= state << 13; state ^= state >> 17; state ^= state << 5;
                /* bf16: sign, exponent around 1.0, random mantissa; int8: any byte */
                unsigned char v = (unsigned char)(state >> 7);
                if (dtype == AKF_BF16 && (i & 1)) v = (unsigned char)((v & 0x80) | 0x3F);
                operand[i] = mode == AKF_TILE_ZEROS ? 0 : v;
            }
            _tile_loadd(6, operand, 64);
            _tile_loadd(7, operand + 1024, 64);
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3); _tile_zero(4); _tile_zero(5);
#pragma omp barrier
#pragma omp single
            t0 = akf_now();
            if (mode == AKF_TILE_BLOCK) block_loop(dtype, iters, operand); else loop(dtype, iters);
#pragma omp barrier
#pragma omp single
            t_end = akf_now();
            _tile_release();
        }
        elapsed = t_end - t0;
        const double target = pass == 0 && threads > warm ? 1.0 : seconds;
        if (pass < 2) iters = (long)(iters * (target / (elapsed > 1e-6 ? elapsed : 1e-6))) + 1;
    }
    warm = threads > warm ? threads : warm;
    return (double)iters * (mode == AKF_TILE_BLOCK ? 4 : 6) * per_op * threads / elapsed / 1e9;
}
#else
double akf_tile_peak_amx(int dtype, int mode, int threads, double seconds) {
    (void)dtype; (void)mode; (void)threads; (void)seconds;
    return -1.0;
}
#endif
