/* amxforge-kbench (class `portable`): runs the kernels of this variant on the benchmark shapes and prints one JSON
 * record per line: the hardware limits measured in this run, then one record per case (median of the reps).
 * Derived figures (GFLOP/s, fractions of the limits, sparse speedups) are computed by `amxforge bench kernels`.
 *
 *   amxforge-kbench [--threads 1,2] [--quick] [--reps R] [--min-bytes B] [--only dense|sparse|limits]
 *                   [--limits NAME,...] [--case KERNEL:DTYPE:IMPL:M:N:K[:SPARSITY]]...
 *
 * Without --limits it measures every limit this host runs, or with --case only those the cases are judged against.
 * Decode shapes (M <= 16) stream at least --min-bytes (default 1.1 GB) of distinct weight copies per rep, so that
 * the 300 MB L3 cannot hide DRAM, and measure the read bandwidth beside each rep (paired_read_gbps, and
 * bw_fraction_paired: the median of the reps' fractions of it, with its min and max). Threads are pinned one per
 * core (OMP_PROC_BIND=close, OMP_PLACES=cores; the program sets them and starts itself again) unless OMP_PROC_BIND
 * is already set: an unpinned thread that moves lands on a core whose AMX unit is cold. Every record says whether
 * the threads were pinned. */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "akf_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

enum { MAX_COUNTS = 16, MAX_CASES = 32 }; /* thread counts and --case options one run takes */
struct opts {
    int threads[MAX_COUNTS], nthreads, quick, reps, count_only, ncases;
    double min_bytes;
    const char *only, *limits;
    char *cases[MAX_CASES];
};
static int planned = 0;

static int pinned(void) {
#ifdef _OPENMP
    return omp_get_proc_bind() != omp_proc_bind_false;
#else
    return 0;
#endif
}

/* CPUs the threads may use: the OpenMP places when they are bound (the runtime has by now bound this thread to
 * the first place, so the affinity mask would say one), else the affinity mask; 0 when unknown. */
static int usable_cpus(void) {
#ifdef _OPENMP
    if (pinned()) return omp_get_num_places();
#endif
    cpu_set_t mask;
    return sched_getaffinity(0, sizeof mask, &mask) == 0 ? CPU_COUNT(&mask) : 0;
}

static int dtype_id(const char *name) {
    for (int d = 1; d <= AKF_DTYPE_COUNT; d++)
        if (!strcmp(AKF_DTYPE[d].name, name)) return d;
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static float rnd_unit(void) { return (float)(rnd() >> 8) / 8388608.0f - 1.0f; }

static uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

/* random B [K x N] with the given fraction of zeros; bf16 values in [-1, 1), int8 in [-127, 127] \ {0} */
static void *random_b(int dtype, int K, int N, double sparsity) {
    size_t n = (size_t)K * N;
    void *B = malloc(n * (size_t)AKF_DTYPE[dtype].elem_bytes);
    uint32_t zero_below = (uint32_t)(sparsity * 4294967295.0);
    for (size_t i = 0; i < n; i++) {
        int zero = sparsity > 0 && rnd() <= zero_below;
        if (dtype == AKF_BF16) {
            float v = rnd_unit();
            ((uint16_t *)B)[i] = zero ? 0 : f32_to_bf16(v == 0.0f ? 0.5f : v);
        } else {
            int v = (int)(rnd() % 254) - 127;
            ((int8_t *)B)[i] = (int8_t)(zero ? 0 : (v == 0 ? 1 : v));
        }
    }
    return B;
}

struct weights { int copies; void **dense; akf_sparse **sparse; size_t bytes_each; };

static struct weights make_weights(int dtype, int sparse, int K, int N, double sparsity, double min_bytes) {
    struct weights w = {1, NULL, NULL, 0};
    /* the same weights for every implementation of a shape: seeded from the case, not from the run so far */
    rng_state = 0x9E3779B97F4A7C15ull ^ ((uint64_t)K << 40) ^ ((uint64_t)N << 16) ^ (uint64_t)(sparsity * 1000) ^
                ((uint64_t)dtype << 60);
    void *B = random_b(dtype, K, N, sparsity);
    void *first = NULL;
    akf_sparse *sfirst = NULL;
    if (sparse) {
        char msg[256];
        sfirst = akf_sparse_pack(dtype, K, N, B, msg, sizeof msg);
        if (!sfirst) { fprintf(stderr, "amxforge-kbench: %s\n", msg); exit(1); }
        struct akf_sparse_info info;
        akf_sparse_info(sfirst, &info);
        w.bytes_each = info.bytes;
    } else {
        w.bytes_each = dtype == AKF_BF16 ? akf_bf16_packed_elems(K, N) * 2 : akf_int8_packed_bytes(K, N);
        first = akf_alloc(w.bytes_each);
        if (dtype == AKF_BF16) akf_bf16_pack_b(K, N, B, first);
        else akf_int8_pack_b(K, N, B, first);
    }
    free(B);
    if (min_bytes > 0) w.copies = (int)(min_bytes / (double)w.bytes_each) + 1;
    w.dense = calloc((size_t)w.copies, sizeof(void *));
    w.sparse = calloc((size_t)w.copies, sizeof(akf_sparse *));
    for (int c = 0; c < w.copies; c++) {
        if (sparse) w.sparse[c] = c ? akf_sparse_clone(sfirst) : sfirst;
        else if (c) { w.dense[c] = akf_alloc(w.bytes_each); memcpy(w.dense[c], first, w.bytes_each); }
        else w.dense[c] = first;
        if ((sparse && !w.sparse[c]) || (!sparse && !w.dense[c])) {
            fprintf(stderr, "amxforge-kbench: out of memory for %d weight copies of %zu bytes\n", w.copies, w.bytes_each);
            exit(1);
        }
    }
    return w;
}

static void free_weights(struct weights *w) {
    for (int c = 0; c < w->copies; c++) { akf_free(w->dense[c]); akf_sparse_free(w->sparse[c]); }
    free(w->dense);
    free(w->sparse);
}


/* the bytes the read bandwidth streams: more than the L3, at least what a decode case streams */
static size_t read_bytes(const struct opts *o) { return o->min_bytes > 1.2e9 ? (size_t)o->min_bytes : (size_t)1.2e9; }

static void run_case(const struct opts *o, const char *kernel, int dtype, int impl, int M, int N, int K, double sparsity,
                     int threads) {
    if (o->count_only) { planned++; return; }
    const int sparse = strcmp(kernel, "sparse") == 0, decode = M <= 16;
    struct weights w = make_weights(dtype, sparse, K, N, sparsity, decode ? o->min_bytes : 0);
    void *A = random_b(dtype, M, K, 0.0);
    float *as = malloc(sizeof(float) * (size_t)M), *bs = malloc(sizeof(float) * (size_t)N);
    for (int i = 0; i < M; i++) as[i] = 0.01f;
    for (int i = 0; i < N; i++) bs[i] = 0.02f;
    float *C = akf_alloc(sizeof(float) * (size_t)M * N);
    int reps = o->reps > 0 ? o->reps : (decode ? 5 : 3);
    double *times = malloc(sizeof(double) * (size_t)(reps + 1));
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    /* a decode streams its weights: the read bandwidth is measured beside each repetition (before it and after it in
     * turn), and each repetition's fraction of it reported, so that a host whose bandwidth drifts between the limits
     * and the cases does not decide the ratio */
    akf_reader *reader = decode && o->min_bytes > 0 ? akf_reader_open(read_bytes(o), threads) : NULL;
    double *read = malloc(sizeof(double) * (size_t)(reps + 1)), *fraction = malloc(sizeof(double) * (size_t)(reps + 1));
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        if (reader && r >= 0 && r % 2 == 0) read[r] = akf_reader_rep(reader);
        double t0 = akf_now();
        for (int c = 0; c < w.copies; c++) {
            int rc = sparse ? (dtype == AKF_BF16 ? akf_spmm_bf16(impl, M, A, w.sparse[c], C)
                                                 : akf_spmm_int8(impl, M, A, as, w.sparse[c], bs, C))
                            : (dtype == AKF_BF16 ? akf_gemm_bf16(impl, M, N, K, A, w.dense[c], C)
                                                 : akf_gemm_int8(impl, M, N, K, A, as, w.dense[c], bs, C));
            if (rc != AKF_OK) { fprintf(stderr, "amxforge-kbench: %s %s %s failed: status %d\n", kernel, akf_impl_name(impl),
                                        AKF_DTYPE[dtype].name, rc); exit(1); }
        }
        if (r >= 0) times[r] = (akf_now() - t0) / w.copies;
        if (reader && r >= 0 && r % 2 == 1) read[r] = akf_reader_rep(reader);
        if (reader && r >= 0) fraction[r] = (double)w.bytes_each / times[r] / 1e9 / read[r];
    }
    akf_reader_close(reader);
    qsort(times, (size_t)reps, sizeof *times, cmp_double);
    printf("{\"record\": \"case\", \"kernel\": \"%s\", \"impl\": \"%s\", \"dtype\": \"%s\", \"M\": %d, \"N\": %d, \"K\": %d, "
           "\"sparsity\": %.2f, \"threads\": %d, \"seconds\": %.9g, \"reps\": %d, \"copies\": %d, \"weight_bytes\": %zu, "
           "\"flops\": %.6g, \"min_seconds\": %.9g, \"max_seconds\": %.9g, \"pinned\": %s",
           kernel, akf_impl_name(impl), AKF_DTYPE[dtype].name, M, N, K, sparsity, threads, times[reps / 2], reps,
           w.copies, w.bytes_each, 2.0 * M * N * K, times[0], times[reps - 1], pinned() ? "true" : "false");
    if (reader) {
        qsort(read, (size_t)reps, sizeof *read, cmp_double);
        qsort(fraction, (size_t)reps, sizeof *fraction, cmp_double);
        printf(", \"paired_read_gbps\": %.2f, \"bw_fraction_paired\": %.4f, \"bw_fraction_paired_min\": %.4f, "
               "\"bw_fraction_paired_max\": %.4f", read[reps / 2], fraction[reps / 2], fraction[0], fraction[reps - 1]);
    }
    printf("}\n");
    fflush(stdout);
    free(times); free(read); free(fraction); free(A); free(as); free(bs); akf_free(C);
    free_weights(&w);
}

/* One limit record: the median of `reps` measurements, with their min and max and the conditions, so that a
 * fraction judged against an unstable limit can be flagged (amxforge bench kernels does, above 10 % spread). */
static void limit_record(const char *name, const char *unit, double *v, int reps, int threads, size_t bytes) {
    qsort(v, (size_t)reps, sizeof *v, cmp_double);
    double med = v[reps / 2];
    printf("{\"record\": \"limit\", \"limit\": \"%s\", \"%s\": %.2f, \"min\": %.2f, \"max\": %.2f, "
           "\"spread_pct\": %.1f, \"reps\": %d, \"threads\": %d, \"warmup\": true, \"pinned\": %s",
           name, unit, med, v[0], v[reps - 1], med > 0 ? 100.0 * (v[reps - 1] - v[0]) / med : 0.0, reps, threads,
           pinned() ? "true" : "false");
    if (bytes) printf(", \"bytes\": %zu", bytes);
    printf("}\n");
}

/* whether a comma list of limit names holds this one */
static int listed(const char *list, const char *name) {
    const size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0')) return 1;
    return 0;
}

/* whether --limits (all when absent) asks for this one */
static int wanted(const struct opts *o, const char *name) { return !o->limits || listed(o->limits, name); }

/* the limit an implementation's cases of a dtype are judged against (its `peak` in toolchain/kernels.toml), or NULL */
static const char *peak_limit(int impl, int dtype) {
#define PEAK(im, dt, limit) if (!strcmp(akf_impl_name(impl), #im) && !strcmp(AKF_DTYPE[dtype].name, #dt)) return limit;
    AKF_PEAK_LIMITS(PEAK)
#undef PEAK
    return NULL;
}

/* The limits, in the order they are measured, and what measures each. */
enum { TILE, TILE_ZEROS, TILE_BLOCK, AVX512, FMA, READ_BW };
static const struct { const char *name; int kind, dtype; } LIMITS[] = {
    {"tile_peak_bf16", TILE, AKF_BF16}, {"tile_peak_bf16_zeros", TILE_ZEROS, AKF_BF16},
    {"tile_peak_int8", TILE, AKF_INT8}, {"tile_peak_int8_zeros", TILE_ZEROS, AKF_INT8},
    {"tile_block_bf16", TILE_BLOCK, AKF_BF16}, {"tile_block_int8", TILE_BLOCK, AKF_INT8},
    {"avx512_peak_bf16", AVX512, AKF_BF16}, {"avx512_peak_int8", AVX512, AKF_INT8},
    {"fma_peak_fp32", FMA, 0}, {"read_bw", READ_BW, 0},
};

static double peak(int kind, int dtype, int threads, double secs) {
    switch (kind) {
    case TILE: case TILE_ZEROS: return akf_limit_tile_peak(dtype, kind == TILE_ZEROS, threads, secs);
    case TILE_BLOCK: return akf_limit_tile_block(dtype, threads, secs);
    case AVX512: return akf_limit_avx512_peak(dtype, threads, secs);
    default: return akf_limit_fma_peak(threads, secs);
    }
}

static void limits(const struct opts *o, int threads) {
    const double secs = o->quick ? 0.2 : 0.5;
    const int reps = o->quick ? 3 : 5;
    const size_t bytes = read_bytes(o);
    double v[8];
    for (size_t i = 0; i < sizeof LIMITS / sizeof *LIMITS; i++) {
        if (!wanted(o, LIMITS[i].name) || !akf_limit_runs_here(LIMITS[i].name)) continue;
        if (o->count_only) { planned++; continue; }
        int ok = 1;
        if (LIMITS[i].kind == READ_BW) ok = akf_limit_read_bw_each(bytes, threads, reps, v) > 0;
        else for (int r = 0; r < reps && ok; r++) ok = (v[r] = peak(LIMITS[i].kind, LIMITS[i].dtype, threads, secs)) > 0;
        if (ok) limit_record(LIMITS[i].name, LIMITS[i].kind == READ_BW ? "gbps" : "gflops", v, reps, threads,
                             LIMITS[i].kind == READ_BW ? bytes : 0);
    }
    fflush(stdout);
}

static const char USAGE[] =
    "usage: amxforge-kbench [--threads 1,2] [--quick] [--reps R] [--min-bytes B] [--only dense|sparse|limits]\n"
    "                       [--limits tile_peak_bf16,read_bw,...|none]   measure only these limits (with --case,\n"
    "                       default: read_bw and the peaks of the cases' implementations)\n"
    "                       [--case KERNEL:DTYPE:IMPL:M:N:K[:SPARSITY]]...   e.g. dense:bf16:amx:512:4096:4096\n";

/* One line naming what is wrong and what to type instead (the last line on stderr: amxforge shows it). */
static int bad(const char *what, const char *value, const char *want, ...) {
    va_list ap;
    va_start(ap, want);
    fprintf(stderr, "amxforge-kbench: %s %s: ", what, value);
    vfprintf(stderr, want, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 0;
}

/* a whole decimal number in [lo, hi], or 0 */
static int whole(const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    *v = strtol(s, &end, 10);
    return end != s && !*end && !errno && *v >= lo && *v <= hi;
}

/* the options that take a value, each named once: parse() finds an argument's index here */
enum { OPT_THREADS, OPT_REPS, OPT_MIN_BYTES, OPT_ONLY, OPT_LIMITS, OPT_CASE, N_VALUED };
static const char *const VALUED[N_VALUED] = {"--threads", "--reps", "--min-bytes", "--only", "--limits", "--case"};

/* 1: run, 0: bad input (one line said why), -1: --help */
static int parse(int argc, char **argv, struct opts *o) {
    *o = (struct opts){{1}, 1, 0, 0, 0, 0, 1.1e9, NULL, NULL, {NULL}};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        long v;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) { fputs(USAGE, stdout); return -1; }
        if (!strcmp(arg, "--quick")) { o->quick = 1; continue; }
        int opt = 0;
        while (opt < N_VALUED && strcmp(arg, VALUED[opt])) opt++;
        if (opt == N_VALUED) {
            fputs(USAGE, stderr);
            return bad("unknown option", arg, "see the usage above");
        }
        if (!val) return bad(arg, "needs a value", "see --help");
        i++;
        switch (opt) {
        case OPT_THREADS: {
            o->nthreads = 0;
            char *list = strdup(val), *s = list;
            for (char *end = s; end; s = end + 1) { /* every item, an empty one (1,,2 or 4,) refused too */
                end = strchr(s, ',');
                if (end) *end = '\0';
                if (!whole(s, 1, 4096, &v)) {
                    free(list);
                    return bad("--threads", val, "give positive counts, e.g. 1,2");
                }
                if (o->nthreads == MAX_COUNTS) {
                    free(list);
                    return bad("--threads", val, "at most %d counts in one run", MAX_COUNTS);
                }
                o->threads[o->nthreads++] = (int)v;
            }
            free(list);
            break;
        }
        case OPT_REPS:
            if (!whole(val, 1, 1000, &v)) return bad("--reps", val, "give a count from 1 to 1000");
            o->reps = (int)v;
            break;
        case OPT_MIN_BYTES: {
            char *end;
            o->min_bytes = strtod(val, &end);
            if (end == val || *end || !(o->min_bytes >= 0 && o->min_bytes <= 1e12))
                return bad("--min-bytes", val, "give a byte count from 0 to 1e12, e.g. 1.1e9");
            break;
        }
        case OPT_ONLY:
            if (strcmp(val, "dense") && strcmp(val, "sparse") && strcmp(val, "limits"))
                return bad("--only", val, "give dense, sparse or limits");
            o->only = val;
            break;
        case OPT_LIMITS: {
            o->limits = val;
            char *list = strdup(val), *save = NULL;
            for (char *s = strtok_r(list, ",", &save); s && strcmp(val, "none"); s = strtok_r(NULL, ",", &save)) {
                size_t k = 0;
                while (k < sizeof LIMITS / sizeof *LIMITS && strcmp(LIMITS[k].name, s)) k++;
                if (k == sizeof LIMITS / sizeof *LIMITS) {
                    char names[512] = "give none or names from";
                    for (k = 0; k < sizeof LIMITS / sizeof *LIMITS; k++)
                        snprintf(names + strlen(names), sizeof names - strlen(names), "%s %s", k ? "," : "",
                                 LIMITS[k].name);
                    free(list);
                    return bad("--limits", val, "%s", names);
                }
            }
            free(list);
            break;
        }
        default: /* OPT_CASE */
            if (o->ncases == MAX_CASES)
                return bad("--case", val, "at most %d cases in one run: split them over runs", MAX_CASES);
            o->cases[o->ncases++] = argv[i];
        }
    }
    return 1;
}

int main(int argc, char **argv) {
    char msg[512];
    struct opts o;
    if (!getenv("OMP_PROC_BIND")) { /* libgomp reads these when it loads: set them, then start again */
        setenv("OMP_PROC_BIND", "close", 1);
        setenv("OMP_PLACES", "cores", 1);
        /* by its own path, so that ps and top name it amxforge-kbench (execv of /proc/self/exe names it "exe"),
         * else through /proc/self/exe (a binary replaced since it started); if both fail, run unpinned (the
         * records say so) */
        char self[4096];
        const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n > 0) {
            self[n] = '\0';
            execv(self, argv);
        }
        execv("/proc/self/exe", argv);
    }
    const int parsed = parse(argc, argv, &o);
    if (parsed <= 0) return parsed < 0 ? 0 : 2;
    const int cpus = usable_cpus();
    for (int i = 0; i < o.nthreads; i++)
        if (cpus > 0 && o.threads[i] > cpus) { /* e.g. started by a process whose OpenMP bound it to one core */
            fprintf(stderr, "amxforge-kbench: warning: %d threads asked for, but this process may run on %d CPUs "
                            "only (its affinity mask): threads will share cores\n", o.threads[i], cpus);
            break;
        }
    if (akf_guard(msg, sizeof msg) != AKF_OK) {
        fprintf(stderr, "amxforge-kbench: variant %s cannot run on this host: %s\n", akf_variant(), msg);
        return AKF_EXIT_UNSUPPORTED;
    }
    const unsigned ok = akf_runnable_impls();
    const int with_limits = !o.only || !strcmp(o.only, "limits");
    if (o.ncases) {
        int sparse[MAX_CASES], dtype[MAX_CASES], impl[MAX_CASES], M[MAX_CASES], N[MAX_CASES], K[MAX_CASES];
        double sp[MAX_CASES];
        for (int c = 0; c < o.ncases; c++) {
            char kernel[16], dt[8], im[16];
            sp[c] = 0.0;
            if (sscanf(o.cases[c], "%15[a-z]:%7[a-z0-9]:%15[a-z0-9_]:%d:%d:%d:%lf", kernel, dt, im, &M[c], &N[c], &K[c], &sp[c]) < 6 ||
                (strcmp(kernel, "dense") && strcmp(kernel, "sparse")) || !dtype_id(dt) ||
                M[c] < 1 || N[c] < 1 || K[c] < 1 || sp[c] < 0 || sp[c] > 1) {
                fprintf(stderr, "amxforge-kbench: --case %s: want KERNEL:DTYPE:IMPL:M:N:K[:SPARSITY], e.g. dense:bf16:amx:512:4096:4096\n", o.cases[c]);
                return 2;
            }
            impl[c] = akf_impl_find(im);
            char names[256];
            if (impl[c] < 1 || !(ok & (1u << (impl[c] - 1)))) {
                fprintf(stderr, "amxforge-kbench: implementation %s is not built into variant %s or cannot run here "
                                "(runs here: %s)\n", im, akf_variant(), akf_impl_names(ok, names, sizeof names));
                return 2;
            }
            sparse[c] = strcmp(kernel, "sparse") == 0;
            dtype[c] = dtype_id(dt);
        }
        /* without --limits, only the limits these cases are judged against: the read bandwidth and the peaks their
         * implementations name (not every limit of the host: that took 49 s at 1 thread on a 2-core builder) */
        static char judges[256] = "read_bw";
        if (!o.limits) {
            for (int c = 0; c < o.ncases; c++) {
                const char *p = peak_limit(impl[c], dtype[c]);
                const size_t n = strlen(judges);
                if (p && !listed(judges, p)) snprintf(judges + n, sizeof judges - n, ",%s", p);
            }
            o.limits = judges;
        }
        if (with_limits) { o.count_only = 1; limits(&o, 1); o.count_only = 0; } /* planned: limit records per count */
        printf("{\"record\": \"plan\", \"records\": %d, \"variant\": \"%s\"}\n", o.nthreads * (o.ncases + planned),
               akf_variant());
        for (int ti = 0; ti < o.nthreads; ti++) {
            if (with_limits) limits(&o, o.threads[ti]);
            for (int c = 0; c < o.ncases; c++)
                run_case(&o, sparse[c] ? "sparse" : "dense", dtype[c], impl[c], M[c], N[c], K[c], sp[c], o.threads[ti]);
        }
        return 0;
    }
    for (o.count_only = 1; o.count_only >= 0; o.count_only--) {
        if (!o.count_only) printf("{\"record\": \"plan\", \"records\": %d, \"variant\": \"%s\"}\n", planned, akf_variant());
    /* the implementations kbench measures, best first (the table's order reversed) */
    int impls[AKF_IMPL_COUNT], nimpls = 0;
#define BENCHED(id, isa, needs, built, bench) if (bench) impls[nimpls++] = id;
    AKF_IMPLEMENTATIONS(BENCHED)
#undef BENCHED
    for (int i = 0; i < nimpls / 2; i++) { int t = impls[i]; impls[i] = impls[nimpls - 1 - i]; impls[nimpls - 1 - i] = t; }
    const int dtypes[] = {AKF_BF16, AKF_INT8};
    static const int NK[3][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}};
    const int prefill[] = {512, 128}, decodeM[] = {1, 4, 16};
    const double sparsities[] = {0.0, 0.5, 0.7, 0.9};
    for (int ti = 0; ti < o.nthreads; ti++) {
        int T = o.threads[ti];
        if (with_limits) limits(&o, T);
        for (int ii = 0; ii < nimpls; ii++) {
            if (!(ok & (1u << (impls[ii] - 1)))) continue;
            for (int di = 0; di < 2; di++)
                for (int s = 0; s < 3; s++) {
                    if (o.quick && s > 0) continue;
                    const int N = NK[s][0], K = NK[s][1];
                    if (!o.only || !strcmp(o.only, "dense")) {
                        for (int m = 0; m < 2; m++)
                            if (!o.quick || m == 0) run_case(&o, "dense", dtypes[di], impls[ii], prefill[m], N, K, 0.0, T);
                        for (int m = 0; m < 3; m++)
                            if (!o.quick || m == 0) run_case(&o, "dense", dtypes[di], impls[ii], decodeM[m], N, K, 0.0, T);
                    }
                    if (!o.only || !strcmp(o.only, "sparse"))
                        for (int m = 0; m < 3; m++)
                            for (int sp = 0; sp < 4; sp++) {
                                if (o.quick && (m > 0 || sp == 0 || dtypes[di] != AKF_BF16)) continue;
                                run_case(&o, "sparse", dtypes[di], impls[ii], decodeM[m], N, K, sparsities[sp], T);
                            }
                }
        }
    }
    }
    return 0;
}
