/* AVX-512 dot-product peaks (class `default`, built where the avx512 implementation is): sixteen independent
 * VDPBF16PS (bf16 pairs into fp32) or VPDPBUSD (u8 x s8 quads into s32) chains per thread on zmm registers, more than
 * latency x throughput on two 512-bit ports, all threads at once, after the same warm-up as the FMA peak. What the
 * avx512 kernels' prefill is judged against, measured in the same run (as the tile peak judges the amx kernels). */
#include "akf_internal.h"

#if AKF_BUILT_avx512
#include <immintrin.h>

#define CHAINS 16

static __attribute__((noinline)) float chains_bf16(long iters, float seed) {
    __m512 acc[CHAINS];
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3380); /* 1, 2^-24 */
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps(seed + (float)c);
    for (long i = 0; i < iters; i++)
#pragma GCC unroll 16
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
    __m512 s = acc[0];
    for (int c = 1; c < CHAINS; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}

static __attribute__((noinline)) float chains_int8(long iters, float seed) {
    __m512i acc[CHAINS];
    const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8((char)seed);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_epi32(c);
    for (long i = 0; i < iters; i++)
#pragma GCC unroll 16
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_dpbusd_epi32(acc[c], a, b);
    __m512i s = acc[0];
    for (int c = 1; c < CHAINS; c++) s = _mm512_add_epi32(s, acc[c]);
    return (float)_mm512_reduce_add_epi32(s);
}

double akf_avx512_peak(int dtype, int threads, double seconds) {
    long iters = 0;
    const int bf16 = dtype == AKF_BF16;
    const double elapsed = akf_time_chains(bf16 ? chains_bf16 : chains_int8, threads, seconds, &iters);
    /* per instruction: 16 lanes x (2 bf16 pairs | 4 int8 quads) x (multiply + add) */
    return (double)iters * CHAINS * 16 * (bf16 ? 2 : 4) * 2 * threads / elapsed / 1e9;
}
#else
double akf_avx512_peak(int dtype, int threads, double seconds) {
    (void)dtype; (void)threads; (void)seconds;
    return -1.0;
}
#endif
