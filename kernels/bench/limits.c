/* Read bandwidth (class `default`): each thread streams its contiguous share of a buffer larger than the L3 with
 * the widest loads the variant has (best of three software-prefetch distances and of eight streams at once); the
 * buffer is first touched by the same threads (page placement). */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "akf_internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

double akf_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double akf_time_chains(float (*chains)(long iters, float seed), int threads, double seconds, long *iters_out) {
    static int warm = 0; /* the most threads warmed up so far */
    long iters = 100000;
    double elapsed = 0.0;
    volatile float sink = 0.0f;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = 0.0, t_end = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
#pragma omp barrier
#pragma omp single
            t0 = akf_now();
            sink += chains(iters, 1.0f);
#pragma omp barrier
#pragma omp single
            t_end = akf_now();
        }
        elapsed = t_end - t0;
        const double target = pass == 0 && threads > warm ? 0.5 : seconds;
        if (pass < 2) iters = (long)(iters * (target / (elapsed > 1e-6 ? elapsed : 1e-6))) + 1;
    }
    warm = threads > warm ? threads : warm;
    *iters_out = iters;
    return elapsed;
}

/* pf: software prefetch distance in bytes, into L2 as the decode kernels do (0: the hardware prefetchers alone);
 * streams: the n bytes read as that many equal parts at once, a step of each in turn (ik's bf16 GEMV reads 8 weight
 * rows at a time) */
static uint64_t read_chunk(const char *p, size_t n, size_t pf, int streams) {
#if defined(__AVX512F__)
    const size_t sub = n / (size_t)streams / 256 * 256;
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i < sub; i += 256)
        for (int s = 0; s < streams; s++) {
            const char *q = p + (size_t)s * sub + i;
            if (pf)
                for (int l = 0; l < 4; l++) _mm_prefetch(q + pf + 64 * l, _MM_HINT_T1);
            a = _mm512_xor_si512(a, _mm512_load_si512(q));
            b = _mm512_xor_si512(b, _mm512_load_si512(q + 64));
            c = _mm512_xor_si512(c, _mm512_load_si512(q + 128));
            d = _mm512_xor_si512(d, _mm512_load_si512(q + 192));
        }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d)));
#elif defined(__AVX2__)
    const size_t sub = n / (size_t)streams / 128 * 128;
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i < sub; i += 128)
        for (int s = 0; s < streams; s++) {
            const char *q = p + (size_t)s * sub + i;
            if (pf) { _mm_prefetch(q + pf, _MM_HINT_T1); _mm_prefetch(q + pf + 64, _MM_HINT_T1); }
            a = _mm256_xor_si256(a, _mm256_load_si256((const __m256i *)q));
            b = _mm256_xor_si256(b, _mm256_load_si256((const __m256i *)(q + 32)));
            c = _mm256_xor_si256(c, _mm256_load_si256((const __m256i *)(q + 64)));
            d = _mm256_xor_si256(d, _mm256_load_si256((const __m256i *)(q + 96)));
        }
    __m256i x = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    return (uint64_t)_mm256_extract_epi64(x, 0) ^ (uint64_t)_mm256_extract_epi64(x, 3);
#else
    (void)pf;
    const size_t sub = n / (size_t)streams / 8 * 8;
    uint64_t v = 0;
    for (size_t i = 0; i < sub; i += 8)
        for (int s = 0; s < streams; s++) { uint64_t w; memcpy(&w, p + (size_t)s * sub + i, 8); v ^= w; }
    return v;
#endif
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double akf_limit_read_bw(size_t bytes, int threads, int reps) {
    return akf_limit_read_bw_each(bytes, threads, reps, NULL);
}

struct akf_reader { char *buf; size_t bytes, share; int threads; };

akf_reader *akf_reader_open(size_t bytes, int threads) {
    char msg[256];
    if (akf_guard(msg, sizeof msg) != AKF_OK || threads < 1) return NULL;
    akf_reader *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->threads = threads;
    r->bytes = AKF_ROUNDUP(bytes, (size_t)threads * 4096);
    r->share = r->bytes / (size_t)threads;
    if (!(r->buf = aligned_alloc(2u << 20, AKF_ROUNDUP(r->bytes, 2u << 20)))) return free(r), NULL;
    madvise(r->buf, r->bytes, MADV_HUGEPAGE);
    char *buf = r->buf;
    const size_t share = r->share;
#pragma omp parallel num_threads(threads)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        memset(buf + (size_t)t * share, t + 1, share);
    }
    return r;
}

double akf_reader_rep(akf_reader *r) {
    /* The best of the plain stream, the stream with software prefetch into L2 at a short and a long distance, and
     * eight streams a thread: a limit must be the fastest read we know how to write (the decode kernel, prefetching
     * into L2, beat the plain stream by 25 % at 8 threads on the EMR guest, and a T0 prefetch by 29 % at 4; eight
     * streams without prefetch, as ik's bf16 GEMV reads, beat one by 10-25 % at 1 and 4 threads there, and the
     * fork's own decode had read its weights at up to 105 % of the one-stream figure). Each thread's share is a
     * multiple of 4 KB, so eight parts of it are whole steps. */
    static const struct { size_t pf; int streams; } passes[] = {{0, 1}, {2048, 1}, {8192, 1}, {0, 8}};
    volatile uint64_t sink = 0;
    double best = 0.0;
    char *buf = r->buf;
    const size_t share = r->share;
    for (size_t d = 0; d < sizeof passes / sizeof *passes; d++) {
        double t0 = akf_now();
#pragma omp parallel num_threads(r->threads) reduction(^ : sink)
        {
            int t = 0;
#ifdef _OPENMP
            t = omp_get_thread_num();
#endif
            sink ^= read_chunk(buf + (size_t)t * share, share, passes[d].pf, passes[d].streams);
        }
        const double v = (double)r->bytes / (akf_now() - t0) / 1e9;
        best = v > best ? v : best;
    }
    return best;
}

void akf_reader_close(akf_reader *r) {
    if (!r) return;
    free(r->buf);
    free(r);
}

double akf_limit_read_bw_each(size_t bytes, int threads, int reps, double *each) {
    if (reps < 1) return -1.0;
    akf_reader *r = akf_reader_open(bytes, threads);
    double *gbps = r ? malloc(sizeof *gbps * (size_t)reps) : NULL;
    if (!gbps) return akf_reader_close(r), -1.0;
    for (int i = 0; i < reps; i++) {
        gbps[i] = akf_reader_rep(r);
        if (each) each[i] = gbps[i];
    }
    qsort(gbps, (size_t)reps, sizeof *gbps, cmp_double);
    double median = gbps[reps / 2];
    free(gbps);
    akf_reader_close(r);
    return median;
}

/* Whether the implementation a limit judges is built and runs here (its loop uses the same instructions). */
static int runs_here(const char *impl) {
    int id = akf_impl_find(impl);
    return id > 0 && (akf_runnable_impls() & (1u << (id - 1)));
}

int akf_limit_runs_here(const char *name) {
    static const char *const needs[][2] = {{"tile_", "amx"}, {"avx512_", "avx512"}, {"fma_", "avx2"}};
    for (size_t i = 0; i < sizeof needs / sizeof *needs; i++)
        if (!strncmp(name, needs[i][0], strlen(needs[i][0]))) return runs_here(needs[i][1]);
    return 1; /* read_bw: plain loads, any host */
}

double akf_limit_tile_peak(int dtype, int zeros, int threads, double seconds) {
    if (!akf_limit_runs_here("tile_peak") || dtype < 1 || dtype > AKF_DTYPE_COUNT || threads < 1) return -1.0;
    return akf_tile_peak_amx(dtype, zeros ? AKF_TILE_ZEROS : AKF_TILE_RANDOM, threads, seconds);
}

double akf_limit_tile_block(int dtype, int threads, double seconds) {
    if (!akf_limit_runs_here("tile_block") || dtype < 1 || dtype > AKF_DTYPE_COUNT || threads < 1) return -1.0;
    return akf_tile_peak_amx(dtype, AKF_TILE_BLOCK, threads, seconds);
}

double akf_limit_fma_peak(int threads, double seconds) {
    if (!akf_limit_runs_here("fma_peak") || threads < 1) return -1.0;
    return akf_fma_peak(threads, seconds);
}

double akf_limit_avx512_peak(int dtype, int threads, double seconds) {
    if (!akf_limit_runs_here("avx512_peak") || dtype < 1 || dtype > AKF_DTYPE_COUNT || threads < 1) return -1.0;
    return akf_avx512_peak(dtype, threads, seconds);
}
