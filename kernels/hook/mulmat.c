/* The matmul handler our kernels enter a fork through (class `portable`: plain C; the kernels it calls go through
 * dispatch and its guard). A fork's thread ith of nth calls it with the fork's own arguments (ik_llama.cpp's
 * iqk_mul_mat_4d: rows of weights Nx, activation rows Ny, K = ne00, byte strides, C with a float stride); it takes
 * MUL_MAT with bf16 weights and f32 or bf16 activations (bf16: rounded already, once, by the caller), computes
 * thread ith's share of the output columns with the best implementation this host runs (one thread: no nested
 * team), and declines everything else, counted, so that the caller runs its own path. Weights are packed once per
 * tensor, on first use, into the dense pair layout, or into the sparse format when enough of them are zeros; a
 * fingerprint of the tensor catches a reload at the same address, and the packed form of weights whose pages were
 * unmapped (the model freed: munmap of its file, or free() of a buffer large enough for malloc to map it) is released
 * before the next tensor is packed.
 *
 * Environment (read once): AMXFORGE_KERNELS=fork declines every call (the fork's own kernels, same binary);
 * AMXFORGE_KERNELS_IMPL=NAME runs that implementation instead of the best (which is, for products of few rows kept
 * sparse, the one [hook] sparse_decode of toolchain/kernels.toml names, where it runs); AMXFORGE_SPARSE_MIN=F
 * (0..1, default sparse_min of toolchain/kernels.toml [hook]) is the zero fraction from which a tensor goes sparse
 * (>1: never); AMXFORGE_KERNELS_STATS=1 prints, at exit, what was taken and what fell back, per shape, with thread
 * 0's time computing what was taken (its time finding and packing tensors apart) and in the fork's own function for
 * what fell back (where the linker's side of the entry times it: akf_hook_fork_time), the packed memory, and
 * the least, mean and most time a thread of the team spent computing the calls it took (packing excluded) and, where
 * calls fell back, in the fork's own function: the two teams' balance side by side. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "akf_internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define GGML_TYPE_F32 0
#define GGML_TYPE_BF16 30
#define FINGERPRINT_ROWS 2 /* rows 0 and Nx/2, and the last row's tail */

/* ---- settings -------------------------------------------------------------------------------------------- */
static struct {
    int off, impl, stats, share, share_part;
    int decode_impl; /* sparse products of up to AKF_HOOK_SPARSE_DECODE_ROWS rows: this one, where it runs */
    double sparse_min;
    char refused[256]; /* why a setting cannot be followed ("" when all can) */
} settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;
static void print_stats(void);

/* The implementation asked for, and the sparse decode's given it: the table's choice where the best was asked for
 * and the host runs it, else the one asked for. */
static void set_impl(int impl) {
    const int id = akf_impl_find(AKF_HOOK_SPARSE_DECODE_IMPL);
    settings.impl = impl;
    settings.decode_impl = impl == AKF_IMPL_BEST && id > 0 && akf_impl_resolve(id) == id ? id : impl;
}

/* A setting the handler cannot follow: said once, when the settings are read (whether or not stats are asked for),
 * and again in the stats at exit; the fork's own kernels then run every call, never a guess. */
static void refuse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void refuse(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(settings.refused, sizeof settings.refused, fmt, ap);
    va_end(ap);
    settings.off = 1;
}

static void read_settings(void) {
    const char *mode = getenv("AMXFORGE_KERNELS"), *impl = getenv("AMXFORGE_KERNELS_IMPL");
    const char *sparse = getenv("AMXFORGE_SPARSE_MIN"), *stats = getenv("AMXFORGE_KERNELS_STATS");
    const char *share = getenv("AKF_HOOK_SHARE");
    char names[128];
    settings.off = mode && strcmp(mode, "fork") == 0;
    settings.share = !(share && strcmp(share, "0") == 0);
    const char *part = getenv("AKF_HOOK_SHARE_PART");
    char *end = NULL;
    const long p = part && *part ? strtol(part, &end, 10) : 0;
    settings.share_part = end && !*end && p >= 1 && p <= 100 ? (int)p : 0; /* 0: by the team's size */
    set_impl(AKF_IMPL_BEST);
    settings.sparse_min = AKF_HOOK_SPARSE_MIN;
    if (mode && *mode && strcmp(mode, "fork") && strcmp(mode, "amxforge"))
        refuse("AMXFORGE_KERNELS=%s is neither fork nor amxforge", mode);
    else if (impl && *impl) {
        const int id = akf_impl_find(impl);
        if (id < 0)
            refuse("AMXFORGE_KERNELS_IMPL=%s is no implementation (runs here: %s)", impl,
                   akf_impl_names(akf_runnable_impls(), names, sizeof names));
        else if (akf_impl_resolve(id) != id)
            refuse("AMXFORGE_KERNELS_IMPL=%s is not built into variant %s or cannot run here (runs here: %s)", impl,
                   akf_variant(), akf_impl_names(akf_runnable_impls(), names, sizeof names));
        else
            set_impl(id);
    }
    if (share && *share && strcmp(share, "0") && strcmp(share, "1") && !settings.refused[0])
        refuse("AKF_HOOK_SHARE=%s is neither 0 (the static split) nor 1", share);
    if (part && *part && !settings.share_part && !settings.refused[0])
        refuse("AKF_HOOK_SHARE_PART=%s is no percentage from 1 to 100", part);
    if (sparse && *sparse && !settings.refused[0]) {
        double v = strtod(sparse, &end);
        if (end != sparse && *end == '\0' && v >= 0) settings.sparse_min = v;
        else refuse("AMXFORGE_SPARSE_MIN=%s is no zero fraction (give one like 0.5)", sparse);
    }
    if (settings.refused[0])
        fprintf(stderr, "amxforge-kernels: %s: the fork's own kernels run every call\n", settings.refused);
    settings.stats = stats && strcmp(stats, "1") == 0;
    if (stats && *stats && strcmp(stats, "0") && !settings.stats) /* a diagnostic: the kernels stay as they are */
        fprintf(stderr, "amxforge-kernels: AMXFORGE_KERNELS_STATS=%s is neither 0 nor 1: no statistics at exit (give "
                        "1 for them)\n", stats);
    if (settings.stats) atexit(print_stats);
}

void akf_hook_load(void) { pthread_once(&settings_once, read_settings); }

void akf_hook_settings(int impl, double sparse_min) {
    pthread_once(&settings_once, read_settings);
    set_impl(impl);
    settings.sparse_min = sparse_min;
    settings.off = settings.refused[0] != 0;
}

/* ---- counters: one row per (shape, path) --------------------------------------------------------------- */
#define MAX_ROWS 512
struct row {
    long Nx, Ny, K;
    int typeA, typeB;
    const char *path;
    uint64_t calls;
    double seconds, fork_seconds; /* taken: thread 0 computing (packing excluded); fell back: in the fork's own */
};
static double pack_seconds; /* thread 0's time packing tensors (its share), under rows_lock */
static struct row rows[MAX_ROWS];
static int nrows, rows_lost;
static _Thread_local int declined_row = -1; /* the row of this thread's last declined call: its fork time goes there */
static pthread_mutex_t rows_lock = PTHREAD_MUTEX_INITIALIZER;

/* each thread's time computing the calls it took (after the packing), by its index ith, and in the fork's own
 * function for the calls it declined: the two teams' balance; the threads seen, by the largest team */
#define STATS_THREADS 1024
struct thread_seconds {
    double seconds;
    char pad[56]; /* a cache line each: every thread adds to its own */
};
static struct thread_seconds thread_time[STATS_THREADS] __attribute__((aligned(64))),
    fork_thread_time[STATS_THREADS] __attribute__((aligned(64)));
static _Atomic int threads_seen, fork_threads_seen;
static void seen_team(_Atomic int *seen_by, int nth) {
    const int team = AKF_MIN(nth, STATS_THREADS);
    int seen = atomic_load_explicit(seen_by, memory_order_relaxed);
    while (seen < team && !atomic_compare_exchange_weak(seen_by, &seen, team)) {}
}
/* the team's units computed (dense: pairs of panels, sparse: panels); of them, taken from another's range */
enum { UNIT_PAIRS, UNIT_PANELS, UNIT_KINDS };
static _Atomic unsigned long long units_done[UNIT_KINDS], units_taken[UNIT_KINDS];

/* a row's path: "taken: dense|sparse", else why the call fell back */
static int is_taken(const char *path) { return strncmp(path, "taken", 5) == 0; }

/* thread 0's calls (every thread takes or declines alike) and, taken, its seconds computing them (packing apart) */
static void count(long Nx, long Ny, long K, int typeA, int typeB, const char *path, double seconds) {
    pthread_mutex_lock(&rows_lock);
    int i = 0;
    while (i < nrows && !(rows[i].Nx == Nx && rows[i].Ny == Ny && rows[i].K == K && rows[i].typeA == typeA &&
                          rows[i].typeB == typeB && rows[i].path == path))
        i++;
    if (i == nrows && nrows < MAX_ROWS) rows[nrows++] = (struct row){Nx, Ny, K, typeA, typeB, path, 0, 0.0, 0.0};
    if (i < nrows) rows[i].calls++, rows[i].seconds += seconds;
    else rows_lost++;
    declined_row = !is_taken(path) && i < nrows ? i : -1;
    pthread_mutex_unlock(&rows_lock);
}

int akf_hook_timing(int ith) {
    pthread_once(&settings_once, read_settings);
    return settings.stats && ith >= 0 && ith < STATS_THREADS;
}

void akf_hook_fork_time(int ith, int nth, double seconds) {
    if (ith < 0 || ith >= STATS_THREADS) return;
    fork_thread_time[ith].seconds += seconds;
    seen_team(&fork_threads_seen, nth);
    if (ith) return;
    pthread_mutex_lock(&rows_lock);
    if (declined_row >= 0) rows[declined_row].fork_seconds += seconds;
    declined_row = -1;
    pthread_mutex_unlock(&rows_lock);
}

/* ---- the team's split of a product -------------------------------------------------------------------------
 * Each thread of the fork's team owns the units of the static split (q0..q1: pairs of 16-column panels of a dense
 * product, panels of a sparse one, balanced by nonzeros) and works them from the front, a share of what is left at a
 * time (SHARE_PART); a thread done with its own takes one unit at a time from the back of another's range of the same
 * call (the same activations and output). On a shared host some cores run slower (the AMX host, 16 threads, prefill:
 * the slowest thread computed 1.15-1.58x the mean time, the product waiting for it); their work moves to the others. A
 * range is one word, changed only by compare-and-swap: the owner's sequence number (16 bits, new each call: a thief's
 * swap against an older call's word fails), front and back (24 bits each). A range is empty once its owner leaves the
 * call, so only calls under way have work to take. AKF_HOOK_SHARE=0 keeps the static split (tuning runs). */
#define TEAM_MAX 128
/* The percent of what is left of its range an owner claims at a time, by team size (rows: up to that many threads);
 * AKF_HOOK_SHARE_PART=P overrides it. Each claim is a kernel call of its own, whose start a decode pays for: the
 * builder (2 threads, ik AMX branch, 369 M bf16, llama-bench tg32, 4 alternated rounds) decoded 45.2-46.1 t/s claiming
 * 25 %, 46.0-46.5 claiming 50 % and 45.8-47.2 claiming all at once (an earlier build, llama-sweep-bench tg64: 37.4-38.1
 * at 25 %, 43.3-43.8 all at once). A slow core holds a small team up too: the AMX host at 4 threads (1 B bf16, 13
 * rotated rounds, 2026-12-07), where a round's slowest thread computed up to 1.30x the team's mean time claiming all at
 * once, decoded 1.04-1.06x faster claiming 50 % (the AMX branch / ik main; 1.05x / 1.04x claiming 25 %), and its worst
 * round against the fork's own rose from 0.88x / 0.89x to 1.04x / 0.97x. A large team loses more to a slow core: the
 * AMX host at 16 threads, claiming 25 % against 75 % (4 paired rounds): pp128 1.08x [0.93, 1.20], tg32 1.14x [0.97,
 * 1.22]. Sparse products share their panels alike since the pruned models' tg at 16 threads varied most (the AMX host,
 * one call, 3 rounds: 1.19-2.09x the dense at 50 % zeros). The first measurement there (10 alternated rounds, 16
 * threads, 1 B bf16) had the static split ahead on the pruned models, tg 1.17x / 1.29x (50 / 70 % zeros) on the AMX
 * branch and 1.06x / 1.09x on ik main, while the dense shared split was 1.13x / 1.08x ahead of its static one: each
 * claim, a call of the sparse decode, rebuilt its copy of the activations element by element, as long as a panel's
 * work. Built by rows now (akf_group_a_row), claims of 25 % cost what one claim of all does (the builder, 2 threads,
 * 70 % zeros: 67-69 t/s either way, 59-61 before); a small team's claims of 50 % cost that pruned model 2 %
 * there (369 M, 3 alternated rounds: 82.8-84.3 t/s against 85.5-85.7 claiming all at once). */
static const int SHARE_PART[][2] = {{4, 50}, {1 << 30, 25}};
#define SHARE_BITS 24
#define SHARE_MASK ((1ull << SHARE_BITS) - 1)
struct share {
    _Atomic uint64_t word;
    _Atomic(const void *) B; /* the call the range belongs to: written before the word that publishes it */
    _Atomic(float *) C;
    _Atomic long M;
    char pad[32]; /* a cache line each */
};

/* ---- packed tensors ------------------------------------------------------------------------------------- */
enum state { PACKING, DENSE, SPARSE, REFUSED, FREED };
struct packed {
    const void *W;
    long Nx, K, stride;
    uint64_t fingerprint;
    _Atomic int state; /* enum state: read without the lock once packed */
    size_t bytes;
    uint16_t *Bp;
    akf_sparse *S;
    struct packed *next, *chain; /* every tensor; those of its bucket */
    /* the packing under way, shared by the threads that reach the tensor (chunks of panels, two phases: count the
     * nonzeros, then pack in the form they chose) */
    int panels, chunk, chunks, form;
    _Atomic int phase, next_chunk[2], done[2], bad;
    uint64_t *nnz; /* per panel, then the value offset of each (sparse) */
    struct share team[TEAM_MAX]; /* each thread's range of the call under way */
};
static struct packed *_Atomic tensors; /* append-only: readers walk it without the lock */
#define BUCKETS 1024 /* and by address: a call finds its tensor without walking them all (a model has hundreds) */
static struct packed *_Atomic buckets[BUCKETS];
static unsigned bucket(const void *W) { return (unsigned)(((uintptr_t)W >> 6) * 0x9E3779B97F4A7C15ull >> 54); }
static struct packed *find(const void *W, long Nx, long K, long stride) {
    struct packed *t = atomic_load_explicit(&buckets[bucket(W)], memory_order_acquire);
    while (t && !(t->W == W && t->Nx == Nx && t->K == K && t->stride == stride)) t = t->chain;
    return t;
}
static pthread_mutex_t tensors_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tensors_cond = PTHREAD_COND_INITIALIZER;
static struct akf_hook_totals totals;

/* A hash of the first 64 bytes of the first and the middle row, and of the last row's tail. Every call computes it
 * and its lines are never in cache (the kernels read the packed copy): all are asked for before any is hashed, so
 * that their misses overlap. Measured on the builder, the handler's cost over the bare kernel per call of a 1 B
 * model's decode (154 tensors, thread 0 of 16): 7 us with 9 rows read one after the other, 2.8 us with 9 rows asked
 * for at once, 1.4 us with these 3 and the bucket lookup, 1 ms -> 0.2 ms of every token. */
static uint64_t fingerprint(const void *W, long Nx, long K, long stride) {
    const unsigned char *p[FINGERPRINT_ROWS + 1];
    const size_t len = (size_t)(K < 32 ? K : 32) * 2;
    for (int i = 0; i <= FINGERPRINT_ROWS; i++) {
        const long r = i < FINGERPRINT_ROWS ? Nx * i / FINGERPRINT_ROWS : Nx - 1;
        p[i] = (const unsigned char *)W + (size_t)r * (size_t)stride + (i < FINGERPRINT_ROWS ? 0 : (size_t)K * 2 - len);
        __builtin_prefetch(p[i]);
        __builtin_prefetch(p[i] + len - 1);
    }
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i <= FINGERPRINT_ROWS; i++)
        for (size_t j = 0; j < len; j += 8) {
            uint64_t word = 0;
            memcpy(&word, p[i] + j, len - j < 8 ? len - j : 8);
            h = (h ^ word) * 1099511628211ull;
            h ^= h >> 29;
        }
    return h;
}

static size_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb ? kb * 1024 : (size_t)-1; /* unknown: do not refuse */
}

static void release(struct packed *t) {
    akf_free(t->Bp);
    akf_sparse_free(t->S);
    t->Bp = NULL;
    t->S = NULL;
}

/* one past the last byte of t's weights */
static uintptr_t weights_end(const struct packed *t) {
    return (uintptr_t)t->W + (size_t)(t->Nx - 1) * (size_t)t->stride + (size_t)t->K * 2;
}

/* W's pages are no longer mapped: msync answers ENOMEM for a range with a hole */
static int unmapped(const struct packed *t) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo = (uintptr_t)t->W & ~(page - 1);
    return msync((void *)lo, weights_end(t) - lo, MS_ASYNC) != 0 && errno == ENOMEM;
}

/* Under tensors_lock: release a packed tensor whose weights are gone or changed; the node stays (readers walk the
 * list without the lock), and a tensor later used at the same address is packed anew. */
static void drop(struct packed *t) {
    totals.bytes -= t->bytes;
    totals.freed++;
    totals.freed_bytes += t->bytes;
    release(t);
    atomic_store(&t->state, FREED);
}

void akf_hook_changed(const void *p, size_t bytes) {
    const uintptr_t lo = (uintptr_t)p, hi = lo + bytes;
    pthread_mutex_lock(&tensors_lock);
    for (struct packed *t = tensors; t && bytes; t = t->next) {
        const int state = atomic_load(&t->state);
        if ((state == DENSE || state == SPARSE || state == REFUSED) && (uintptr_t)t->W < hi && lo < weights_end(t)) {
            if (state == REFUSED) atomic_store(&t->state, FREED); /* decided for other weights: decide again */
            else drop(t);
        }
    }
    pthread_mutex_unlock(&tensors_lock);
}

/* Under tensors_lock, before another tensor is packed: release the packed form of weights freed since. No call can
 * be using it: its caller would be reading the unmapped weights too (the fingerprint). The node stays (readers walk
 * the list without the lock); a tensor later loaded at the same address is packed anew. */
static void sweep(void) {
    for (struct packed *t = tensors; t; t = t->next) {
        const int state = atomic_load(&t->state);
        if ((state == DENSE || state == SPARSE) && unmapped(t)) drop(t);
    }
}

/* Under tensors_lock: t is to be packed (again); the threads that reach it share the work (help). 0 when it cannot
 * be: its packed form could need more than half of MemAvailable (decided before its weights are read), or no memory
 * for the counts. */
static int start_packing(struct packed *t) {
    const int N = (int)t->Nx;
    const size_t dense_bytes = akf_bf16_packed_elems((int)t->K, N) * sizeof(uint16_t);
    /* at most: the sparse form, the nonzero values, a mask bit per element (1/16 of dense bf16) and an offset per
     * tile (1/128) */
    t->bytes = dense_bytes + dense_bytes / 8;
    atomic_store(&t->state, PACKING);
    if (t->bytes > mem_available() / 2) return 0;
    t->panels = AKF_ROUNDUP(N, 16) / 16;
    t->chunk = (t->panels + 63) / 64; /* about 64 chunks: every thread of a team of 16-64 finds work */
    t->chunks = (t->panels + t->chunk - 1) / t->chunk;
    t->form = REFUSED;
    free(t->nnz);
    t->nnz = calloc((size_t)t->panels + 1, sizeof *t->nnz);
    for (int i = 0; i < 2; i++) atomic_store(&t->next_chunk[i], 0), atomic_store(&t->done[i], 0);
    atomic_store(&t->bad, 0);
    atomic_store(&t->phase, 0);
    return t->nnz != NULL;
}

static void work(struct packed *t, int phase, int c) {
    const int p0 = c * t->chunk, p1 = AKF_MIN(t->panels, p0 + t->chunk), K = (int)t->K, N = (int)t->Nx;
    const size_t ldw = (size_t)t->stride / 2;
    int bad_k, bad_n;
    if (phase == 0) {
        if (akf_sparse_count_panels(AKF_BF16, K, N, t->W, 1, ldw, p0, p1, t->nnz, &bad_k, &bad_n))
            atomic_store(&t->bad, 1); /* an Inf or NaN: dense, which copies any bits */
    } else if (t->form == SPARSE)
        akf_sparse_fill_panels(t->S, t->W, 1, ldw, p0, p1, t->nnz[p0]);
    else
        akf_bf16_pack_bt_panels(K, N, t->W, ldw, t->Bp, p0, p1);
}

/* After the counting: the form (sparse from sparse_min zeros) and its memory; 1 when there is packing to do, 2 when
 * the memory could not be had. */
static int choose(struct packed *t) {
    const int K = (int)t->K, N = (int)t->Nx;
    uint64_t nnz = 0;
    for (int p = 0; p < t->panels; p++) {
        const uint64_t count = t->nnz[p];
        t->nnz[p] = nnz; /* each panel's first value */
        nnz += count;
    }
    const int sparse = !atomic_load(&t->bad) && 1.0 - (double)nnz / ((double)K * (double)N) >= settings.sparse_min;
    const size_t dense_bytes = akf_bf16_packed_elems(K, N) * sizeof(uint16_t);
    if (sparse && (t->S = akf_sparse_alloc(AKF_BF16, K, N, nnz))) {
        t->form = SPARSE;
        return 1;
    }
    t->bytes = dense_bytes;
    if (!(t->Bp = akf_alloc(dense_bytes))) return 2;
    t->form = DENSE;
    return 1;
}

/* Under tensors_lock, the packing done: the tensor's state, the totals (and one warning at the first refusal). */
static void finish(struct packed *t) {
    int state = t->form;
    if (state == SPARSE) {
        struct akf_sparse_info info;
        akf_sparse_finish(t->S);
        akf_sparse_info(t->S, &info);
        t->bytes = info.bytes;
        totals.sparse++;
    } else if (state == DENSE)
        totals.dense++;
    else {
        totals.refused++;
        totals.refused_bytes += t->bytes;
        if (totals.refused == 1)
            fprintf(stderr, "amxforge-kernels: not enough memory to pack a %ldx%ld bf16 tensor (%zu bytes more): such "
                            "tensors run on the fork's own kernels (AMXFORGE_KERNELS_STATS=1 counts them)\n", t->Nx,
                    t->K, t->bytes);
    }
    if (state != REFUSED) totals.bytes += t->bytes;
    free(t->nnz);
    t->nnz = NULL;
    atomic_store_explicit(&t->state, state, memory_order_release);
}

/* Take chunks of the packing until none is left; the thread that completes a phase moves it on (choose, finish).
 * Returns once the tensor is packed (or refused). */
static void help(struct packed *t) {
    for (;;) {
        const int phase = atomic_load(&t->phase);
        if (phase == 2) return;
        const int c = atomic_fetch_add(&t->next_chunk[phase], 1);
        if (c >= t->chunks) { /* the phase's chunks are all taken: wait for whoever completes it */
            pthread_mutex_lock(&tensors_lock);
            while (atomic_load(&t->phase) == phase) pthread_cond_wait(&tensors_cond, &tensors_lock);
            pthread_mutex_unlock(&tensors_lock);
            continue;
        }
        work(t, phase, c);
        if (atomic_fetch_add(&t->done[phase], 1) + 1 < t->chunks) continue;
        const int next = phase == 0 ? choose(t) : 2;
        pthread_mutex_lock(&tensors_lock);
        if (next == 2) finish(t);
        atomic_store(&t->phase, next);
        pthread_cond_broadcast(&tensors_cond);
        pthread_mutex_unlock(&tensors_lock);
    }
}

/* The packed form of W. The first thread to reach a tensor starts its packing and every thread that reaches it
 * meanwhile (the fork's team calls with the same weights at once) takes a share; later calls take no lock (16
 * threads per matmul, a hundred matmuls per token). */
static struct packed *packed_tensor(const void *W, long Nx, long K, long stride) {
    const uint64_t fp = fingerprint(W, Nx, K, stride);
    struct packed *t = find(W, Nx, K, stride);
    if (t) {
        int state = atomic_load_explicit(&t->state, memory_order_acquire);
        if (state != PACKING && state != FREED && t->fingerprint == fp) return t;
    }
    pthread_mutex_lock(&tensors_lock);
    if ((t = find(W, Nx, K, stride))) {
        const int state = atomic_load(&t->state);
        if (state == PACKING) { /* under way: take a share */
            pthread_mutex_unlock(&tensors_lock);
            help(t);
            return t->fingerprint == fp ? t : packed_tensor(W, Nx, K, stride);
        }
        if (state != FREED && t->fingerprint == fp) {
            pthread_mutex_unlock(&tensors_lock);
            return t;
        }
        /* another tensor at the same address (a model freed and another loaded): pack again */
        if (state == DENSE || state == SPARSE) {
            totals.bytes -= t->bytes;
            totals.repacked++;
        }
        release(t);
        t->fingerprint = fp;
        atomic_store(&t->state, PACKING); /* before the sweep: not a packed tensor any more */
    } else {
        if (!(t = calloc(1, sizeof *t))) {
            pthread_mutex_unlock(&tensors_lock);
            return NULL;
        }
        t->W = W, t->Nx = Nx, t->K = K, t->stride = stride, t->fingerprint = fp, t->next = tensors;
        t->chain = buckets[bucket(W)];
        atomic_init(&t->state, PACKING);
        atomic_store_explicit(&tensors, t, memory_order_release);
        atomic_store_explicit(&buckets[bucket(W)], t, memory_order_release);
    }
    sweep(); /* first: memory given back counts */
    if (!start_packing(t)) {
        t->form = REFUSED;
        atomic_store(&t->phase, 2);
        finish(t);
        pthread_mutex_unlock(&tensors_lock);
        return t;
    }
    pthread_mutex_unlock(&tensors_lock);
    help(t);
    return t;
}

static const char *implementation_name(int impl) {
    /* the one that runs, else the one asked for (not runnable here), else none */
    const char *name = akf_impl_name(akf_impl_resolve(impl));
    if (!name) name = akf_impl_name(impl);
    return name ? name : "none";
}

/* ---- per-thread buffers ------------------------------------------------------------------------------- */
static _Thread_local struct { uint16_t *a; size_t a_n; float *c; size_t c_n; int serial; } local;

static int grow(void **p, size_t *have, size_t bytes) {
    if (*have >= bytes) return 1;
    akf_free(*p);
    *have = 0;
    if (!(*p = akf_alloc(bytes))) return 0;
    *have = bytes;
    return 1;
}

static void check(int rc, int impl) {
    if (rc == AKF_OK) return;
    fprintf(stderr, "amxforge-kernels: implementation %s failed (status %d) after the call was taken\n",
            implementation_name(impl), rc);
    abort(); /* other threads of this call may have taken their share: declining now would leave holes */
}

/* This thread's buffer for an M x width block of the output, which the kernels write densely. */
static float *out_block(int M, int width) {
    if (!grow((void **)&local.c, &local.c_n, (size_t)M * width * sizeof(float))) {
        fprintf(stderr, "amxforge-kernels: out of memory for a %dx%d output block\n", M, width);
        abort(); /* other threads of this call may have taken their share: declining now would leave holes */
    }
    return local.c;
}

/* The block out_block() returned, into columns n0.. of C's M rows. */
static void put_block(float *C, long stride_C, int n0, int M, int width) {
    for (int m = 0; m < M; m++)
        memcpy(C + (size_t)m * (size_t)stride_C + n0, local.c + (size_t)m * width, (size_t)width * sizeof(float));
}

/* Units u0..u1 of a product into C: pairs of a dense one, panels of a sparse one. */
static void units(const struct packed *t, int unit, int impl, int M, int N, int K, const uint16_t *a, float *C,
                  long stride_C, int u0, int u1) {
    const int cols = unit == UNIT_PAIRS ? 32 : 16, n0 = cols * u0, n1 = AKF_MIN(N, cols * u1), width = n1 - n0;
    if (width <= 0) return;
    float *c = out_block(M, width);
    if (unit == UNIT_PAIRS) {
        check(akf_gemm_bf16(impl, M, width, K, a, t->Bp + (size_t)n0 * AKF_ROUNDUP(K, AKF_BF16_KT), c), impl);
    } else {
        akf_sparse view;
        akf_sparse_view(t->S, u0, u1, &view);
        check(akf_spmm_bf16(impl, M, a, &view, c), impl);
    }
    put_block(C, stride_C, n0, M, width);
    akf_set_same_a(1); /* this product's later claims multiply the same activations: their tiles are kept */
}

static uint64_t share_word(uint64_t seq, uint64_t front, uint64_t back) {
    return seq << (2 * SHARE_BITS) | front << SHARE_BITS | back;
}

/* Thread ith's part of a product of n_units units: its own q0..q1, then units left in the ranges of the others. */
static void team_units(struct packed *t, int unit, int n_units, int impl, int M, int N, int K, const uint16_t *a,
                       const void *B, float *C, long stride_C, int q0, int q1, int ith, int nth) {
    const int team = AKF_MIN(nth, TEAM_MAX);
    if (!settings.share || nth == 1 || n_units >= (int)SHARE_MASK) {
        units(t, unit, impl, M, N, K, a, C, stride_C, q0, q1);
        if (q1 > q0) atomic_fetch_add_explicit(&units_done[unit], (unsigned long long)(q1 - q0), memory_order_relaxed);
        return;
    }
    unsigned long long mine = 0, taken = 0;
    int part = settings.share_part;
    for (int i = 0; !part; i++) part = nth <= SHARE_PART[i][0] ? SHARE_PART[i][1] : 0;
    if (ith < TEAM_MAX) {
        struct share *own = &t->team[ith];
        const uint64_t last = atomic_load_explicit(&own->word, memory_order_relaxed);
        const uint64_t seq = ((last >> (2 * SHARE_BITS)) + 1) & 0xffff;
        atomic_store_explicit(&own->word, share_word(seq, 0, 0), memory_order_release);
        atomic_store_explicit(&own->B, B, memory_order_relaxed);
        atomic_store_explicit(&own->C, C, memory_order_relaxed);
        atomic_store_explicit(&own->M, M, memory_order_relaxed);
        uint64_t w = share_word(seq, (uint64_t)q0, (uint64_t)q1);
        atomic_store_explicit(&own->word, w, memory_order_release);
        for (;;) {
            const int f = (int)(w >> SHARE_BITS & SHARE_MASK), b = (int)(w & SHARE_MASK);
            if (f >= b) break;
            const int n = (int)(((long)(b - f) * part + 99) / 100);
            if (!atomic_compare_exchange_weak_explicit(&own->word, &w, share_word(seq, (uint64_t)(f + n), (uint64_t)b),
                                                       memory_order_acq_rel, memory_order_acquire))
                continue; /* w now holds the word a thief left */
            units(t, unit, impl, M, N, K, a, C, stride_C, f, f + n);
            mine += (unsigned long long)n;
            w = atomic_load_explicit(&own->word, memory_order_acquire);
        }
    } else {
        units(t, unit, impl, M, N, K, a, C, stride_C, q0, q1); /* beyond the slots: not shared */
        mine = (unsigned long long)(q1 - q0);
    }
    for (int s = 1; s < team; s++) {
        struct share *other = &t->team[(ith + s) % team];
        uint64_t w = atomic_load_explicit(&other->word, memory_order_acquire);
        for (;;) {
            const int f = (int)(w >> SHARE_BITS & SHARE_MASK), b = (int)(w & SHARE_MASK);
            if (f >= b || atomic_load_explicit(&other->B, memory_order_relaxed) != B ||
                atomic_load_explicit(&other->C, memory_order_relaxed) != C ||
                atomic_load_explicit(&other->M, memory_order_relaxed) != M)
                break; /* nothing left, or another call's range */
            if (!atomic_compare_exchange_weak_explicit(&other->word, &w, w - 1, memory_order_acq_rel,
                                                       memory_order_acquire))
                continue;
            units(t, unit, impl, M, N, K, a, C, stride_C, b - 1, b);
            taken++;
            w = atomic_load_explicit(&other->word, memory_order_acquire);
        }
    }
    atomic_fetch_add_explicit(&units_done[unit], mine + taken, memory_order_relaxed);
    if (taken) atomic_fetch_add_explicit(&units_taken[unit], taken, memory_order_relaxed);
}

/* ---- the entry ------------------------------------------------------------------------------------------ */
int akf_hook_mul_mat_4d(long Nx, long Ny, long ne00, long ne02, long ne03, long ne12, long ne13, long nb02,
                        long nb03, long nb12, long nb13, long nb2, long nb3, int typeA, const void *A, long strideA,
                        int typeB, const void *B, long strideB, float *C, long stride_C, int ith, int nth) {
    (void)nb02, (void)nb03, (void)nb12, (void)nb13, (void)nb2, (void)nb3;
    pthread_once(&settings_once, read_settings);
    const double t0 = settings.stats && ith == 0 ? akf_now() : 0.0;
    const long b_size = typeB == GGML_TYPE_BF16 ? 2 : 4;
    const char *why = NULL;
    if (settings.off) why = settings.refused[0] ? "setting refused" : "AMXFORGE_KERNELS=fork";
    else if (typeA != GGML_TYPE_BF16) why = "weights not bf16";
    else if (typeB != GGML_TYPE_F32 && typeB != GGML_TYPE_BF16) why = "activations neither f32 nor bf16";
    else if (ne02 != 1 || ne03 != 1 || ne12 != 1 || ne13 != 1) why = "batched (3-d/4-d) product";
    else if (Nx < 1 || Ny < 1 || ne00 < 1 || Nx > 1 << 30 || Ny > 1 << 30 || ne00 > 1 << 30) why = "size out of range";
    else if (strideA < ne00 * 2 || strideA % 2 || strideB < ne00 * b_size || strideB % b_size || stride_C < Nx)
        why = "strides";
    else if (nth < 1 || ith < 0 || ith >= nth) why = "thread split";
    else if (!akf_runnable_impls()) why = "no implementation runs here";
    if (why) {
        if (settings.stats && ith == 0) count(Nx, Ny, ne00, typeA, typeB, why, 0.0);
        return 0;
    }
    struct packed *t = packed_tensor(A, Nx, ne00, strideA);
    const int state = t ? atomic_load_explicit(&t->state, memory_order_acquire) : REFUSED;
    if (state == REFUSED) {
        if (settings.stats && ith == 0) count(Nx, Ny, ne00, typeA, typeB, "not packed (memory)", 0.0);
        return 0;
    }
    const double t1 = settings.stats && ith < STATS_THREADS ? akf_now() : 0.0;
    if (settings.stats && ith == 0) {
        pthread_mutex_lock(&rows_lock);
        pack_seconds += t1 - t0; /* finding the tensor, and packing its share where it was new */
        pthread_mutex_unlock(&rows_lock);
    }
    const int M = (int)Ny, K = (int)ne00, N = (int)Nx;
    /* this thread's units: pairs of 16-column panels of a dense product (the AMX kernel's step), panels of a sparse
     * one balanced by nonzeros; every thread takes or declines alike, so the split covers all columns once */
    const int unit = state == SPARSE ? UNIT_PANELS : UNIT_PAIRS;
    const int n_units = unit == UNIT_PANELS ? t->S->panels : (AKF_ROUNDUP(N, 16) / 16 + 1) / 2;
    int q0, q1;
    if (unit == UNIT_PANELS) akf_sparse_split(t->S, nth, ith, &q0, &q1);
    else q0 = (int)((long)n_units * ith / nth), q1 = (int)((long)n_units * (ith + 1) / nth);
    const char *taken = state == SPARSE ? "taken: sparse" : "taken: dense";
    if (q1 <= q0 && !settings.share) {
        if (settings.stats && ith == 0) count(Nx, Ny, ne00, typeA, typeB, taken, akf_now() - t1);
        return 1;
    }
#ifdef _OPENMP
    if (!local.serial) { /* the fork's thread is one of its team: our kernels run one thread inside it */
        omp_set_num_threads(1);
        local.serial = 1;
    }
#endif
    akf_set_streams(nth); /* ... and tune as for the fork's team, which streams the weights alongside */
    /* the activations as the kernels take them: M rows of K bf16, one after the other (bf16 rows so laid out are
     * used where they are) */
    const int direct = typeB == GGML_TYPE_BF16 && strideB == (long)K * 2;
    if (!direct && !grow((void **)&local.a, &local.a_n, (size_t)M * K * sizeof(uint16_t))) {
        fprintf(stderr, "amxforge-kernels: out of memory for a %dx%d activation block\n", M, K);
        abort(); /* other threads of this call may have taken their share: declining now would leave holes */
    }
    const uint16_t *a = direct ? B : local.a;
    int rc = AKF_OK;
    for (int m = 0; m < M && rc == AKF_OK && !direct; m++) {
        const char *row = (const char *)B + (size_t)m * (size_t)strideB;
        if (typeB == GGML_TYPE_BF16) memcpy(local.a + (size_t)m * K, row, (size_t)K * 2);
        else rc = akf_cvt_bf16(settings.impl, (const float *)row, local.a + (size_t)m * K, (size_t)K);
    }
    const int impl = state == SPARSE && M <= AKF_HOOK_SPARSE_DECODE_ROWS ? settings.decode_impl : settings.impl;
    check(rc, impl);
    team_units(t, unit, n_units, impl, M, N, K, a, B, C, stride_C, q0, q1, ith, nth);
    akf_set_same_a(0); /* the activations' tiles were this product's: the next call of this thread is another's */
    if (settings.stats && ith < STATS_THREADS) {
        thread_time[ith].seconds += akf_now() - t1;
        seen_team(&threads_seen, nth);
    }
    if (settings.stats && ith == 0) count(Nx, Ny, ne00, typeA, typeB, taken, akf_now() - t1);
    return 1;
}

int akf_hook_wants_bf16(long ne02, long ne03, long ne12, long ne13, int typeA, int typeB) {
    pthread_once(&settings_once, read_settings);
    return !settings.off && typeA == GGML_TYPE_BF16 && typeB == GGML_TYPE_F32 && ne02 == 1 && ne03 == 1 &&
           ne12 == 1 && ne13 == 1 && akf_runnable_impls() != 0;
}

void akf_hook_totals(struct akf_hook_totals *out) {
    pthread_mutex_lock(&tensors_lock);
    *out = totals;
    pthread_mutex_unlock(&tensors_lock);
    out->pairs = atomic_load(&units_done[UNIT_PAIRS]);
    out->pairs_moved = atomic_load(&units_taken[UNIT_PAIRS]);
    out->panels = atomic_load(&units_done[UNIT_PANELS]);
    out->panels_moved = atomic_load(&units_taken[UNIT_PANELS]);
}

/* Drop every packed tensor (tests; a process that knows its weights are gone). */
void akf_hook_forget(void) {
    pthread_mutex_lock(&tensors_lock);
    while (tensors) {
        struct packed *t = tensors;
        while (atomic_load(&t->state) == PACKING) pthread_cond_wait(&tensors_cond, &tensors_lock);
        atomic_store(&tensors, t->next);
        release(t);
        free(t);
    }
    for (int b = 0; b < BUCKETS; b++) atomic_store(&buckets[b], NULL);
    memset(&totals, 0, sizeof totals);
    for (int u = 0; u < UNIT_KINDS; u++) {
        atomic_store(&units_done[u], 0);
        atomic_store(&units_taken[u], 0);
    }
    pthread_mutex_unlock(&tensors_lock);
}

/* the least, mean and most of a team's n per-thread times (none: no line) */
static void print_team(const char *what, const struct thread_seconds *t, int n) {
    if (n <= 0) return;
    int lo = 0, hi = 0;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        sum += t[i].seconds;
        if (t[i].seconds < t[lo].seconds) lo = i;
        if (t[i].seconds > t[hi].seconds) hi = i;
    }
    fprintf(stderr, "amxforge-kernels: %s, %d threads: min %.3f ms (thread %d), mean %.3f ms, max %.3f ms "
                    "(thread %d)\n", what, n, t[lo].seconds * 1e3, lo, sum / n * 1e3, t[hi].seconds * 1e3, hi);
}

static void print_stats(void) {
    struct akf_hook_totals t;
    akf_hook_totals(&t);
    char decode[96] = "";
    if (strcmp(implementation_name(settings.decode_impl), implementation_name(settings.impl)))
        snprintf(decode, sizeof decode, ", sparse products of up to %d rows %s", AKF_HOOK_SPARSE_DECODE_ROWS,
                 implementation_name(settings.decode_impl));
    fprintf(stderr, "amxforge-kernels: implementation %s (variant %s)%s; packed %llu dense + %llu sparse tensors, "
                    "%.1f MiB; %llu not packed (memory, %.1f MiB); %llu packed again after a reload; %llu released "
                    "with their weights (%.1f MiB)\n",
            implementation_name(settings.impl), akf_variant(), decode, (unsigned long long)t.dense,
            (unsigned long long)t.sparse, (double)t.bytes / (1 << 20), (unsigned long long)t.refused,
            (double)t.refused_bytes / (1 << 20),
            (unsigned long long)t.repacked, (unsigned long long)t.freed, (double)t.freed_bytes / (1 << 20));
    if (settings.refused[0]) fprintf(stderr, "amxforge-kernels: %s: every call fell back\n", settings.refused);
    pthread_mutex_lock(&rows_lock);
    double ours = 0.0, fork = 0.0;
    for (int i = 0; i < nrows; i++) {
        const int taken = is_taken(rows[i].path);
        char time[96] = "";
        if (taken) snprintf(time, sizeof time, ", %.3f ms in thread 0", rows[i].seconds * 1e3);
        else if (rows[i].fork_seconds > 0.0)
            snprintf(time, sizeof time, ", %.3f ms in thread 0 in the fork's own function", rows[i].fork_seconds * 1e3);
        ours += rows[i].seconds;
        fork += rows[i].fork_seconds;
        fprintf(stderr, "amxforge-kernels: %s%s%s %ldx%ld (K %ld) typeA %d typeB %d: %llu calls%s\n",
                taken ? "" : "fell back (", rows[i].path, taken ? "" : ")", rows[i].Nx, rows[i].Ny, rows[i].K,
                rows[i].typeA, rows[i].typeB, (unsigned long long)rows[i].calls, time);
    }
    if (rows_lost) fprintf(stderr, "amxforge-kernels: %d calls of further shapes not itemised\n", rows_lost);
    if (nrows)
        fprintf(stderr, "amxforge-kernels: thread 0 in the matmuls: %.3f ms in ours (and %.3f ms finding and packing "
                        "tensors), %.3f ms in the fork's own function (the calls that fell back, where its entry took "
                        "them)\n", ours * 1e3, pack_seconds * 1e3, fork * 1e3);
    pthread_mutex_unlock(&rows_lock);
    print_team("time computing the calls taken, per thread (packing excluded)", thread_time,
               atomic_load(&threads_seen));
    print_team("time in the fork's own function for the calls that fell back, per thread", fork_thread_time,
               atomic_load(&fork_threads_seen));
    const struct { const char *what; unsigned long long done, moved; } lines[UNIT_KINDS] = {
        [UNIT_PAIRS] = {"dense column pairs", t.pairs, t.pairs_moved},
        [UNIT_PANELS] = {"sparse panels", t.panels, t.panels_moved}};
    for (int u = 0; u < UNIT_KINDS; u++)
        if (lines[u].done)
            fprintf(stderr, "amxforge-kernels: %s computed by the team %llu, %llu (%.1f %%) by a thread other than "
                            "their owner%s\n", lines[u].what, lines[u].done, lines[u].moved,
                    100.0 * (double)lines[u].moved / (double)lines[u].done,
                    settings.share ? "" : " (AKF_HOOK_SHARE=0: static)");
}
