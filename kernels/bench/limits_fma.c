/* fp32 FMA peak (class `default`, built where the avx2 implementation is): twelve independent VFMADD231PS chains
 * per thread (more than latency x throughput, 4 x 2 on Zen 3 and Golden Cove), all threads at once, after a warm-up
 * (the first 100 ms of a cold core run at a lower clock here). What the avx2 kernels' bf16 prefill, widened to fp32,
 * is judged against, measured in the same run. */
#include "akf_internal.h"

#if AKF_BUILT_avx2
#include <immintrin.h>

#define CHAINS 12

static __attribute__((noinline)) float chains(long iters, float seed) {
    __m256 acc[CHAINS];
    const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-7f * seed);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_set1_ps(seed + (float)c);
    for (long i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
    __m256 s = acc[0];
    for (int c = 1; c < CHAINS; c++) s = _mm256_add_ps(s, acc[c]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
}

double akf_fma_peak(int threads, double seconds) {
    long iters = 0;
    const double elapsed = akf_time_chains(chains, threads, seconds, &iters);
    return (double)iters * CHAINS * 8 * 2 * threads / elapsed / 1e9;
}
#else
double akf_fma_peak(int threads, double seconds) {
    (void)threads; (void)seconds;
    return -1.0;
}
#endif
