/* AMX dense GEMM, bf16 (TDPBF16PS) and int8 (TDPBSSD), class `amx`.
 * Blocking: 2x2 output tiles (32 rows x 32 columns) in tmm0-3, two A tiles in tmm4-5, two B tiles in tmm6-7; the
 * tile config is loaded once per thread; each output tile is stored once, after the whole K loop (TILEZERO first).
 * A is copied into tile blocks (contiguous 1 KB tiles) by all threads at once, into scratch kept between calls, or
 * read where it lies in a product of few columns (A_DIRECT_MAX_N); B is prepacked. Threads split the 32-column
 * blocks; within a thread a group of column blocks that fits L2 is swept for every 32-row block. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "akf_internal.h"

#if AKF_BUILT_amx
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* fp32 -> bf16 (VCVTNEPS2BF16: round to nearest even), 16 at a time; the tail as the reference rounds. The same as
 * gemm_avx512.c's: this unit cannot call that one, which a variant need not build. */
static void cvt_bf16(const float *in, uint16_t *out, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(in + i)));
    for (; i < n; i++) out[i] = akf_bf16_round(in[i]);
}

/* The tile configuration both AMX kernels load (palette 1, eight 64-byte-wide tiles): tiles below `row_tiles` (C,
 * and A) hold `rows` rows, fewer than 16 for a decode of fewer rows (the tile op then does less work); the others (B)
 * always 16 rows of k groups. */
void akf_amx_load_config(int rows, int row_tiles) {
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.rows[t] = t < row_tiles ? (uint8_t)rows : 16; cfg.colsb[t] = 64; }
    /* gcc 12 does not count the bytes ldtilecfg reads as used once this is a function of its own: without the
     * barrier it dropped the rows/colsb stores (an invalid configuration: SIGSEGV on the first tile op) */
    __asm__ __volatile__("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

/* C tiles 0-3 and A tiles 4-5 hold the block's rows; B tiles 6-7 are full. */
static void load_config(int rows) { akf_amx_load_config(rows, 6); }

/* Decode (one or two row blocks) streams B once: software prefetch this many bytes ahead in each of the two B
 * panels, whatever the team. AKF_DECODE_PF=BYTES overrides it for tuning runs. benchmarks/tune_blocking.py on an
 * EMR guest (kbench M=1, 4096x4096, over 1.1 GB): without prefetch 10.1 / 35.4 / 104 GB/s at 1 / 4 / 16 threads,
 * with 2048 / 4096 / 8192 bytes 12.2 / 44.1 / 124 GB/s, which were the defaults by team size until ik's own tg
 * said otherwise: the AMX branch's llama-bench -p 0 -n 32 on a 1 B bf16 model (a later EMR guest, 3 rounds, the
 * order reversed every other round) gave 8192 bytes 8.78-8.88 t/s at 1 thread against 8.42-8.59 with 2048 (1024 /
 * 4096: 8.05-8.33), and at 4 threads 28.9-31.3 against 28.1-29.7 with 4096 (16384: 29.2-31.1); at 16 threads 4096
 * to 32768 were alike (61-67 t/s). The builder (2 cores, kbench M=1 2048x5632 and 5632x2048, 3 rounds) read at
 * 83-93 % of the paired read bandwidth with 2048 and with 8192 at 1 and 2 threads. */
#define DECODE_PF_BYTES 8192
/* Tried and not kept: each panel's K range read as 4 or 8 streams at once (a step of each part in turn, so a pair
 * is 8-16 streams, as ik's GEMV reads 8 weight rows), on the EMR guest (kbench M=1 2048x5632 and ik main's tg,
 * interleaved): without prefetch mostly 59-77 % of the paired read bandwidth (once 92) against 75-92 % for the pair
 * as here; with it 67-95 %, and 0.89-1.00x the pair's tg at 1 thread, 0.78-0.83x at 4. A tile load waits for the
 * tile op that last read its tile, so two B tiles keep only two loads in flight whatever the streams; the prefetch
 * is what reaches ahead. Also tried: a VDPBF16PS decode of this layout reading 4 or 8 panels at once (zmm loads, one
 * accumulator each, prefetch 0 / 2 / 4 KB ahead), kbench M=1 2048x5632 and 5632x2048 and ik main's tg, interleaved:
 * 8 panels 63-94 % of the paired read bandwidth against 79-91 % for this pair, and 0.84-0.89x its tg at 1 and 4
 * threads, 0.96-0.99x at 16; 4 panels 0.93-1.02x at 1 thread, 0.93-0.98x at 4 and 16. And a VDPBF16PS decode of the
 * fork's weights where they lie, unpacked, 8 rows at a time (as ik's GEMV reads them), in the hook: in the AMX branch's
 * tg on an EMR guest (3 rounds) 0.97-1.00x this pair at 1 thread, 1.00-1.11x at 4, 1.06-1.08x at 16 (0.93-1.03x the
 * fork's own), but 0.59-0.62x at 1 and 2 threads on the builder (11.6-11.8 against 19.0-19.4 t/s at 1, a 369 M model;
 * this pair 1.43-1.47x the fork's own there): not kept; a choice between the two would have to be made per host. */
/* Near a pair's end the prefetch moves on to the thread's next pair (AKF_DECODE_NEXT=0: it stays in the pair, as
 * before): inside a fork a thread's share of a matmul is a few pairs, each start otherwise a stall. The builder (2
 * cores, M=1, 256x2048, 1 and 2 threads, 5 alternated runs) saw no difference (7.2-7.7 / 11.7-12.5 GB/s either
 * way); an EMR guest's tg without it (the AMX branch, 1 B bf16, 3 rounds) 0.94-0.99x at 1 thread, 1.02-1.07x at 4.
 * Reaching on from a call's last pair into the caller's next claim (the handler's owner, 16 threads) gave 1.00x /
 * 1.02x the tg of stopping there (10 paired rounds, AMX branch / ik main): not kept. */
/* A read in place up to this many columns, copied into tiles beyond. A fork's thread computes a few columns of each
 * product and copied the whole activation block for them; read in place, each 16-row A tile touches 16 rows a row
 * stride apart (4 KB for K = 2048: one L1 set), which the copy avoids, so wide products keep copying. The builder
 * (1 thread, bf16, one slice after another of an nth-thread split, GFLOP/s copy -> in place): M=128, 512x2048 at 32
 * columns 408 -> 833, at 256 879 -> 861; 2048x2048 at 128 727 -> 827, at 512 968 -> 813; 2048x5632 at 128 651 ->
 * 899, at 512 934 -> 898; M=512 alike (512x2048 at 32 columns 272 -> 615, 2048x2048 at 2048 1009 -> 744). */
#define A_DIRECT_MAX_N 256
/* the tuning overrides, read once per process (a fork's thread calls gemm a hundred times per token) */
static struct { int pf_set, pf, tune_set, tune[3], next, direct; } overrides;
static pthread_once_t overrides_once = PTHREAD_ONCE_INIT;
static void read_overrides(void) {
    const char *pf = getenv("AKF_DECODE_PF"), *tune = getenv("AKF_TUNE"), *next = getenv("AKF_DECODE_NEXT");
    overrides.next = !(next && !strcmp(next, "0")); /* AKF_DECODE_NEXT=0: no prefetch into the next pair */
    const char *direct = getenv("AKF_A_DIRECT");
    overrides.direct = direct && *direct ? atoi(direct) : -1;
    if (pf && *pf) { overrides.pf_set = 1; overrides.pf = atoi(pf) > 0 ? atoi(pf) : 0; }
    if (tune && sscanf(tune, "%d,%d,%d", &overrides.tune[0], &overrides.tune[1], &overrides.tune[2]) == 3)
        overrides.tune_set = 1;
}

static int decode_prefetch(void) {
    pthread_once(&overrides_once, read_overrides);
    return overrides.pf_set ? overrides.pf : DECODE_PF_BYTES;
}

enum { BF16 = AKF_BF16, INT8 = AKF_INT8 };
/* K chunk (tiles), column blocks sharing an A chunk (GA), row blocks sharing a B chunk (GB), per dtype, for teams
 * of up to BLOCKING_FEW threads and for larger ones. */
enum { BLOCKING_FEW = 4 };
static const int BLOCKING[][2][3] = {[BF16] = {{32, 4, 16}, {32, 2, 16}},   /* bf16: 1024 values of k per chunk */
                                     [INT8] = {{64, 4, 16}, {128, 2, 16}}}; /* int8: 4096 or 8192 */

/* One block: nm (1|2) A tile streams x nn (1|2) B panel streams, KT tiles deep. The accumulators start from
 * zero (first K chunk) or from the partial sums kept in `acc` (tile-contiguous, 1 KB per tile). Each k-step also
 * prefetches pf_per_step lines of `pf` (and of pf + pf_stride) into L2: the next row pair's A chunk, spread thin
 * so that it never stalls the tile loads. */
static inline __attribute__((always_inline)) void block(int dt, int nm, int nn, int KT, const char *a0, const char *a1,
                                                         size_t a_step, size_t a_stride,
                                                         const char *b0, const char *b1, char *const acc[4], int first,
                                                         const char *pf, int pf_stride, int pf_per_step,
                                                         size_t pf_wrap) {
    if (first) {
        _tile_zero(0);
        if (nn > 1) _tile_zero(1);
        if (nm > 1) _tile_zero(2);
        if (nm > 1 && nn > 1) _tile_zero(3);
    } else {
        _tile_loadd(0, acc[0], 64);
        if (nn > 1) _tile_loadd(1, acc[1], 64);
        if (nm > 1) _tile_loadd(2, acc[2], 64);
        if (nm > 1 && nn > 1) _tile_loadd(3, acc[3], 64);
    }
    for (int t = 0; t < KT; t++) {
        const size_t o = (size_t)t * 1024;
        for (int l = 0; l < pf_per_step; l++) {
            const size_t off = ((size_t)t * pf_per_step + l) * 64;
            const char *p = pf + off + (off >= pf_wrap ? (size_t)pf_stride : 0); /* past the panel: the next pair's */
            __builtin_prefetch(p, 0, 2);
            if (pf_stride) __builtin_prefetch(p + pf_stride, 0, 2);
        }
        _tile_loadd(4, a0 + (size_t)t * a_step, a_stride);
        _tile_loadd(6, b0 + o, 64);
        if (dt == BF16) _tile_dpbf16ps(0, 4, 6); else _tile_dpbssd(0, 4, 6);
        if (nn > 1) {
            _tile_loadd(7, b1 + o, 64);
            if (dt == BF16) _tile_dpbf16ps(1, 4, 7); else _tile_dpbssd(1, 4, 7);
        }
        if (nm > 1) {
            _tile_loadd(5, a1 + (size_t)t * a_step, a_stride);
            if (dt == BF16) _tile_dpbf16ps(2, 5, 6); else _tile_dpbssd(2, 5, 6);
            if (nn > 1) { if (dt == BF16) _tile_dpbf16ps(3, 5, 7); else _tile_dpbssd(3, 5, 7); }
        }
    }
}

static inline __attribute__((always_inline)) void stash(int tile, char *to) {
    switch (tile) {
    case 0: _tile_stored(0, to, 64); break;
    case 1: _tile_stored(1, to, 64); break;
    case 2: _tile_stored(2, to, 64); break;
    default: _tile_stored(3, to, 64); break;
    }
}

/* Write one finished 16x16 output tile (fp32 for bf16; int32 scaled to fp32 for int8), clipped to M x N. */
static inline __attribute__((always_inline)) void store(int dt, int tile, int M, int N, int r0, int c0, float *C,
                                                         const float *as, const float *bs) {
    int rows = AKF_MIN(16, M - r0), cols = AKF_MIN(16, N - c0);
    int32_t buf[256] __attribute__((aligned(64)));
    if (dt == BF16 && rows == 16 && cols == 16) {
        /* through an L1 buffer: ordinary stores overlap their misses on a cold C, a tile store does not */
        stash(tile, (char *)buf);
        for (int r = 0; r < 16; r++) _mm512_storeu_ps(C + (size_t)(r0 + r) * N + c0, _mm512_load_ps((const float *)buf + r * 16));
        return;
    }
    stash(tile, (char *)buf);
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
    const int kt = AKF_DTYPE[dt].tile_k, esize = AKF_DTYPE[dt].elem_bytes;
    const int KT = AKF_ROUNDUP(K, kt) / kt, MB = AKF_ROUNDUP(M, 16) / 16, panels = AKF_ROUNDUP(N, 16) / 16;
    const int pairs = (panels + 1) / 2;
    const size_t panel_bytes = (size_t)KT * 1024;
    /* Blocking for L2 (L3 feeds one core only ~24 GB/s, measured): a group of GA column blocks x GB row blocks
     * keeps its partial sums (4 KB per block) and the current K chunk of its B in L2, so per k-step L3 supplies
     * 2 KB/GA of A (prefetched a row pair ahead) + 2 KB/GB of B. One or two row blocks (decode) have no reuse to
     * win: K is not split and partial sums never leave the tiles. */
    /* BLOCKING: benchmarks/tune_blocking.py on the 16-core EMR guest (pinned, M=512, 4096x4096, warm AMX unit;
     * 1 and 16 threads): every row pair of the 512 shares a B chunk; large teams, whose threads own 8 column
     * pairs each, liked column groups of 2. The sweep's points spread up to 50 % from one process to the next on
     * that host, so only the clear winners were taken. AKF_TUNE="KC,GA,GB" overrides them for tuning runs. */
    const int team = akf_streams();
    const int *bl = BLOCKING[dt][team > BLOCKING_FEW];
    pthread_once(&overrides_once, read_overrides);
    int KC = bl[0], GA = bl[1], GB = bl[2];
    if (overrides.tune_set) { KC = overrides.tune[0]; GA = overrides.tune[1]; GB = overrides.tune[2]; }
    KC = KC > 0 ? KC : 1; GA = GA > 0 ? GA : 1; GB = GB > 0 ? GB : 1;
    const int MP = (MB + 1) / 2;
    if (MB <= 2) { KC = KT; GA = pairs; GB = 1; }
    KC = AKF_MIN(KT, KC);
    const int chunks = (KT + KC - 1) / KC;
    /* A is read where it lies (a tile load takes a row stride) for a product of few columns, when its rows hold
     * whole k-tiles and its row blocks are whole (or it is one block of the rows the tiles are configured for);
     * else it is copied into tiles first, zero-padded (AKF_A_DIRECT=0|1 overrides the width rule for tuning runs) */
    int direct = K % kt == 0 && (MB == 1 || M % 16 == 0) && (N <= A_DIRECT_MAX_N || overrides.direct == 1);
    if (overrides.direct == 0) direct = 0;
    const size_t a_step = direct ? 64 : 1024, a_stride = direct ? (size_t)K * esize : 64;
    int kept = 0;
    char *Ap = direct ? NULL : akf_scratch_a_tiles(M, K, kt, esize, A, &kept);
    char *acc = chunks > 1 ? akf_scratch(AKF_SCRATCH_ACC, (size_t)MB * panels * 1024) : NULL;
    if ((!direct && !Ap) || (chunks > 1 && !acc)) return AKF_ERR_ARG;
    const char *B = Bp;
    const int dpf = MB <= 2 ? decode_prefetch() : 0;
#pragma omp parallel
    {
        if (!direct && !kept) akf_tile_a_share(M, K, kt, esize, A, Ap);
        load_config(MB == 1 ? M : 16);
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        const int q0 = (int)((long)pairs * t / nt), q1 = (int)((long)pairs * (t + 1) / nt);
        for (int g = q0; g < q1; g += GA)
            for (int mg = 0; mg < MP; mg += GB)
                for (int ch = 0; ch < chunks; ch++) {
                    const int first = ch == 0, last = ch == chunks - 1, kt0 = ch * KC, kn = AKF_MIN(KC, KT - kt0);
                    const int nq = AKF_MIN(g + GA, q1) - g, nmp = AKF_MIN(mg + GB, MP) - mg;
                    for (int mp = mg; mp < mg + nmp; mp++)
                        for (int q = g; q < g + nq; q++) {
                            const int mb = 2 * mp, p = 2 * q, nm = mb + 1 < MB ? 2 : 1, nn = p + 1 < panels ? 2 : 1;
                            const char *a0 = direct ? (const char *)A + (size_t)mb * 16 * a_stride + (size_t)kt0 * 64
                                                    : Ap + (size_t)mb * panel_bytes + (size_t)kt0 * 1024;
                            const char *a1 = a0 + (direct ? 16 * a_stride : panel_bytes);
                            const char *b0 = B + (size_t)p * panel_bytes + (size_t)kt0 * 1024, *b1 = b0 + panel_bytes;
                            char *at[4] = {NULL, NULL, NULL, NULL};
                            if (acc)
                                for (int i = 0; i < 2; i++)
                                    for (int j = 0; j < 2; j++)
                                        at[i * 2 + j] = acc + ((size_t)(mb + i) * panels + (size_t)(p + j)) * 1024;
#define ARGS kn, a0, a1, a_step, a_stride, b0, b1, at, first, pf, pf_stride, pf_per_step, pf_wrap
#define BLOCK(DT)                                                                                                     \
    if (nm == 2 && nn == 2) block(DT, 2, 2, ARGS);                                                                     \
    else if (nm == 2) block(DT, 2, 1, ARGS);                                                                          \
    else if (nn == 2) block(DT, 1, 2, ARGS);                                                                          \
    else block(DT, 1, 1, ARGS);
                            const char *pf = Ap;
                            int pf_stride = 0, pf_per_step = 0;
                            size_t pf_wrap = (size_t)-1;
                            if (dpf) { /* decode: this pair's B panels, dpf bytes ahead, a tile per k-step */
                                pf = b0 + dpf;
                                pf_stride = (int)panel_bytes;
                                pf_per_step = 16;
                                /* near the end, the next pair's panels instead of this pair's second (read already):
                                 * its first tiles arrive before it starts, when it is this thread's */
                                if (q + 1 < q1 && overrides.next)
                                    pf_wrap = (size_t)dpf < panel_bytes ? panel_bytes - (size_t)dpf : 0;
                            } else if (MB > 2 && !direct) {
                                /* the next row pair's A chunk, this block's share of it, spread over its k-steps */
                                const int next_mp = mp + 1 < mg + nmp ? mp + 1 : mg, next_ch = mp + 1 < mg + nmp ? ch : ch + 1;
                                if (next_ch < chunks) {
                                    const size_t len = (size_t)AKF_MIN(KC, KT - next_ch * KC) * 1024;
                                    const size_t lo = len * (size_t)(q - g) / (size_t)nq, hi = len * (size_t)(q - g + 1) / (size_t)nq;
                                    pf = Ap + (size_t)(2 * next_mp) * panel_bytes + (size_t)next_ch * KC * 1024 + lo;
                                    pf_stride = 2 * next_mp + 1 < MB ? (int)panel_bytes : 0;
                                    pf_per_step = (int)((hi - lo) / 64 + kn - 1) / kn;
                                }
                            }
                            if (dt == BF16) { BLOCK(BF16) } else { BLOCK(INT8) }
#undef BLOCK
#undef ARGS
                            for (int i = 0; i < nm; i++)
                                for (int j = 0; j < nn; j++) {
                                    if (!last) stash(i * 2 + j, at[i * 2 + j]);
                                    else if (dt == BF16) store(BF16, i * 2 + j, M, N, (mb + i) * 16, (p + j) * 16, C, as, bs);
                                    else store(INT8, i * 2 + j, M, N, (mb + i) * 16, (p + j) * 16, C, as, bs);
                                }
                        }
                }
        _tile_release();
    }
    return AKF_OK;
}

AKF_GEMM_ENTRY_POINTS(amx)
#else
AKF_GEMM_NOT_BUILT(amx)
#endif
