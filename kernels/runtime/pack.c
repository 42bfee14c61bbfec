/* Packing (class `portable`): B into the AMX pair/quad layouts, A into tile blocks, and the SparAMX-style sparse
 * format. Plain C, so it runs anywhere and the kernels stay free of layout bookkeeping. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>

#include "akf_internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

void *akf_alloc(size_t bytes) {
    /* Large weight buffers on 2 MB pages where the kernel allows (THP "madvise" mode): a decode stream crosses a
     * 4 KB page every 64 lines, and the hardware prefetchers stop at page boundaries. */
    if (bytes >= (4u << 20)) {
        void *p = aligned_alloc(2u << 20, AKF_ROUNDUP(bytes, 2u << 20));
        if (p) madvise(p, AKF_ROUNDUP(bytes, 2u << 20), MADV_HUGEPAGE);
        return p;
    }
    return aligned_alloc(64, AKF_ROUNDUP(bytes ? bytes : 1, 64));
}
void akf_free(void *p) { free(p); }

size_t akf_bf16_packed_elems(int K, int N) { return (size_t)AKF_ROUNDUP(K, AKF_BF16_KT) * (size_t)AKF_ROUNDUP(N, 16); }

size_t akf_bf16_packed_index(int K, int k, int n) {
    size_t kp = (size_t)AKF_ROUNDUP(K, AKF_BF16_KT);
    return (((size_t)(n / 16) * (kp / 2) + (size_t)(k / 2)) * 16 + (size_t)(n % 16)) * 2 + (size_t)(k & 1);
}

void akf_bf16_pack_b(int K, int N, const uint16_t *B, uint16_t *Bp) {
    memset(Bp, 0, akf_bf16_packed_elems(K, N) * sizeof *Bp);
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) Bp[akf_bf16_packed_index(K, k, n)] = B[(size_t)k * N + n];
}

float akf_bf16_to_f32(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t akf_bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

void akf_bf16_pack_bt_panels(int K, int N, const uint16_t *W, size_t ldw, uint16_t *Bp, int p0, int p1) {
    /* W is read row by row, each panel's part of Bp written by this call alone */
    const size_t kp = (size_t)AKF_ROUNDUP(K, AKF_BF16_KT);
    memset(Bp + (size_t)p0 * kp * 16, 0, (size_t)(p1 - p0) * kp * 16 * sizeof *Bp);
    for (int n = p0 * 16; n < AKF_MIN(N, p1 * 16); n++) {
        const uint16_t *w = W + (size_t)n * ldw;
        uint16_t *panel = Bp + (size_t)(n / 16) * kp * 16 + (size_t)(n % 16) * 2;
        for (int k = 0; k < K; k++) panel[(size_t)(k / 2) * 32 + (k & 1)] = w[k];
    }
}

size_t akf_int8_packed_bytes(int K, int N) {
    size_t np = (size_t)AKF_ROUNDUP(N, 16);
    return (size_t)AKF_ROUNDUP(K, AKF_INT8_KT) * np + np * sizeof(int32_t);
}

size_t akf_int8_packed_index(int K, int k, int n) {
    size_t kp = (size_t)AKF_ROUNDUP(K, AKF_INT8_KT);
    return (((size_t)(n / 16) * (kp / 4) + (size_t)(k / 4)) * 16 + (size_t)(n % 16)) * 4 + (size_t)(k & 3);
}

void akf_int8_pack_b(int K, int N, const int8_t *B, uint8_t *Bp) {
    size_t np = (size_t)AKF_ROUNDUP(N, 16), body = (size_t)AKF_ROUNDUP(K, AKF_INT8_KT) * np;
    memset(Bp, 0, akf_int8_packed_bytes(K, N));
    int32_t colsum[16];
    for (int n0 = 0; n0 < N; n0 += 16) {
        memset(colsum, 0, sizeof colsum);
        for (int k = 0; k < K; k++)
            for (int n = n0; n < AKF_MIN(n0 + 16, N); n++) {
                int8_t v = B[(size_t)k * N + n];
                Bp[akf_int8_packed_index(K, k, n)] = (uint8_t)v;
                colsum[n - n0] += v;
            }
        memcpy(Bp + body + (size_t)n0 * sizeof(int32_t), colsum, sizeof colsum);
    }
}

void akf_widen_a_row(int dtype, const void *A, int K, int Kp, int row, void *out) {
    if (dtype == AKF_BF16) {
        const uint16_t *a = (const uint16_t *)A + (size_t)row * K;
        uint32_t *o = out;
        for (int k = 0; k < Kp; k++) o[k] = k < K ? (uint32_t)a[k] << 16 : 0u; /* bf16 is the top half of fp32 */
    } else {
        const int8_t *a = (const int8_t *)A + (size_t)row * K;
        int16_t *o = out;
        for (int k = 0; k < Kp; k++) o[k] = k < K ? a[k] : 0;
    }
}

void akf_group_a_row(int dtype, const void *A, int K, int Kp, int row, void *out) {
    const size_t es = (size_t)AKF_DTYPE[dtype].elem_bytes;
    memcpy(out, (const char *)A + (size_t)row * (size_t)K * es, (size_t)K * es);
    memset((char *)out + (size_t)K * es, 0, (size_t)(Kp - K) * es);
    if (dtype == AKF_INT8)
        for (int k = 0; k < Kp; k++) ((uint8_t *)out)[k] ^= 0x80u;
}

size_t akf_tile_a_bytes(int M, int K, int kt_elems, int elem_size) {
    return (size_t)AKF_ROUNDUP(M, 16) * (size_t)AKF_ROUNDUP(K, kt_elems) * (size_t)elem_size;
}

static void tile_a_blocks(int M, int K, int kt_elems, int elem_size, const void *A, void *Ap, int b0, int b1) {
    /* every byte of the blocks written once: rows past M and k past K as zeros (no memset of the whole first) */
    const int ktiles = AKF_ROUNDUP(K, kt_elems) / kt_elems;
    const char *a = A;
    char *out = Ap;
    for (int b = b0; b < b1; b++)
        for (int t = 0; t < ktiles; t++)
            for (int r = 0; r < 16; r++) {
                char *row = out + (((size_t)b * ktiles + t) * 16 + r) * 64;
                const int k0 = t * kt_elems, n = b * 16 + r < M ? AKF_MIN(kt_elems, K - k0) : 0;
                const char *from = a + ((size_t)(b * 16 + r) * K + k0) * elem_size;
                if (n == kt_elems) { /* a whole tile row: 64 bytes, a copy the compiler inlines */
                    memcpy(row, from, 64);
                    continue;
                }
                if (n) memcpy(row, from, (size_t)n * elem_size);
                memset(row + (size_t)n * elem_size, 0, (size_t)(kt_elems - n) * elem_size);
            }
}

void akf_tile_a_share(int M, int K, int kt_elems, int elem_size, const void *A, void *Ap) {
    int nt = 1, t = 0;
#ifdef _OPENMP
    nt = omp_get_num_threads();
    t = omp_get_thread_num();
#endif
    const int blocks = AKF_ROUNDUP(M, 16) / 16, b0 = (int)((long)blocks * t / nt), b1 = (int)((long)blocks * (t + 1) / nt);
    tile_a_blocks(M, K, kt_elems, elem_size, A, Ap, b0, b1);
#pragma omp barrier
}

/* Scratch kept per calling thread between kernel calls, one buffer per slot, grown when too small and freed when
 * the thread ends: a call does not pay for fresh pages (page faults on megabytes of A tiles and partial sums) and
 * two threads calling the kernels at once do not share one. */
struct scratch {
    void *p[AKF_SCRATCH_SLOTS];
    size_t n[AKF_SCRATCH_SLOTS];
    struct { const void *A; int M, K, form; } kept; /* whose A AKF_SCRATCH_A holds, in which form, if anyone's */
};
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static void scratch_free(void *v) {
    struct scratch *s = v;
    for (int i = 0; i < AKF_SCRATCH_SLOTS; i++) free(s->p[i]);
    free(s);
}
static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }

static struct scratch *thread_scratch(void) {
    pthread_once(&scratch_once, scratch_init);
    struct scratch *s = pthread_getspecific(scratch_key);
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) return NULL;
        pthread_setspecific(scratch_key, s);
    }
    return s;
}

void *akf_scratch(int slot, size_t bytes) {
    if (slot < 0 || slot >= AKF_SCRATCH_SLOTS) return NULL;
    struct scratch *s = thread_scratch();
    if (!s) return NULL;
    if (slot == AKF_SCRATCH_A) s->kept.A = NULL; /* the caller writes there: no longer anyone's kept A */
    if (s->n[slot] < bytes) {
        free(s->p[slot]);
        s->n[slot] = 0;
        if (!(s->p[slot] = akf_alloc(bytes))) return NULL;
        s->n[slot] = bytes;
    }
    return s->p[slot];
}

static _Thread_local int same_a;
void akf_set_same_a(int same) { same_a = same; }

void *akf_scratch_a_kept(int form, int M, int K, const void *A, size_t bytes, int *kept) {
    struct scratch *s = thread_scratch();
    *kept = s && same_a && s->kept.A == A && s->kept.M == M && s->kept.K == K && s->kept.form == form;
    if (*kept) return s->p[AKF_SCRATCH_A];
    void *p = akf_scratch(AKF_SCRATCH_A, bytes);
    if (p) s->kept.A = A, s->kept.M = M, s->kept.K = K, s->kept.form = form;
    return p;
}

void *akf_scratch_a_tiles(int M, int K, int kt_elems, int elem_size, const void *A, int *kept) {
    /* the tile's k and the element size follow from the dtype: the element size names it */
    return akf_scratch_a_kept(AKF_A_FORM(AKF_A_TILES, elem_size), M, K, A, akf_tile_a_bytes(M, K, kt_elems, elem_size),
                              kept);
}

static _Thread_local int streams_told;
void akf_set_streams(int n) { streams_told = n > 0 ? n : 0; }
int akf_streams(void) {
    int team = 1;
#ifdef _OPENMP
    team = omp_get_max_threads();
#endif
    return team > streams_told ? team : streams_told;
}

/* ---- sparse format ---------------------------------------------------------------------------------------- */

static int geometry(int dtype, int *kt, int *kpack, int *esize) {
    if (dtype < 1 || dtype > AKF_DTYPE_COUNT) return -1;
    *kt = AKF_DTYPE[dtype].tile_k;
    *kpack = AKF_DTYPE[dtype].group;
    *esize = AKF_DTYPE[dtype].elem_bytes;
    return 0;
}

size_t akf_sparse_mask_bytes(const akf_sparse *S) {
    return (size_t)S->panels * S->ktiles * 16 * (size_t)AKF_DTYPE[S->dtype].mask_bytes;
}
uint64_t akf_sparse_row_mask(const akf_sparse *S, size_t tile, int r) {
    return S->dtype == AKF_BF16 ? ((const uint32_t *)S->masks)[tile * 16 + (size_t)r]
                                : ((const uint64_t *)S->masks)[tile * 16 + (size_t)r];
}
size_t akf_sparse_value_bytes(const akf_sparse *S) { return S->nnz * (size_t)AKF_DTYPE[S->dtype].elem_bytes; }

static int is_nonzero(int dtype, const void *B, size_t i) {
    /* bf16: +0 and -0 are both zero */
    return dtype == AKF_BF16 ? (((const uint16_t *)B)[i] & 0x7FFFu) != 0 : ((const int8_t *)B)[i] != 0;
}

void akf_sparse_free(akf_sparse *S) {
    if (!S) return;
    akf_free(S->masks);
    free(S->tile_off);
    akf_free(S->values);
    free(S->colsum);
    free(S->panel_cost);
    free(S);
}

akf_sparse *akf_sparse_alloc(int dtype, int K, int N, uint64_t nnz) {
    int kt, kpack, esize;
    if (geometry(dtype, &kt, &kpack, &esize)) return NULL;
    akf_sparse *S = calloc(1, sizeof *S);
    if (!S) return NULL;
    S->dtype = dtype; S->K = K; S->N = N;
    S->Kp = AKF_ROUNDUP(K, kt);
    S->panels = AKF_ROUNDUP(N, 16) / 16;
    S->ktiles = S->Kp / kt;
    S->nnz = nnz;
    size_t tiles = (size_t)S->panels * S->ktiles;
    /* masks and values are streamed like dense weights: akf_alloc's pages, zeroed (the expanding loads read up to
     * 64 bytes past the last value) */
    const size_t mask_bytes = akf_sparse_mask_bytes(S), value_bytes = akf_sparse_value_bytes(S) + 64;
    S->masks = akf_alloc(mask_bytes);
    S->tile_off = calloc(tiles + 1, sizeof(uint64_t));
    S->panel_cost = calloc((size_t)S->panels + 1, sizeof(uint64_t));
    S->values = akf_alloc(value_bytes);
    if (S->masks) memset(S->masks, 0, mask_bytes);
    if (S->values) memset(S->values, 0, value_bytes);
    if (dtype == AKF_INT8) S->colsum = calloc((size_t)S->panels * 16, sizeof(int32_t));
    if (!S->masks || !S->tile_off || !S->panel_cost || !S->values || (dtype == AKF_INT8 && !S->colsum)) {
        akf_sparse_free(S);
        return NULL;
    }
    return S;
}

/* B's element (k, n) sits at index k * sk + n * sn (elements): row-major B (sk = N, sn = 1) or a weight matrix W = B^T
 * (sk = 1, sn = its row stride). Work goes panel by panel (16 columns of B), so threads can share it. */

int akf_sparse_count_panels(int dtype, int K, int N, const void *B, size_t sk, size_t sn, int p0, int p1, uint64_t *nnz,
                            int *bad_k, int *bad_n) {
    const int k_inner = sk < sn; /* walk B along its contiguous dimension */
    for (int p = p0; p < p1; p++) {
        const int n0 = p * 16, n1 = AKF_MIN(N, n0 + 16);
        const int outer = k_inner ? n1 - n0 : K, inner = k_inner ? K : n1 - n0;
        uint64_t count = 0;
        for (int o = 0; o < outer; o++)
            for (int in = 0; in < inner; in++) {
                const int k = k_inner ? in : o, n = n0 + (k_inner ? o : in);
                const size_t i = (size_t)k * sk + (size_t)n * sn;
                if (dtype == AKF_BF16 && (((const uint16_t *)B)[i] & 0x7F80u) == 0x7F80u) {
                    *bad_k = k, *bad_n = n;
                    return -1;
                }
                count += (uint64_t)is_nonzero(dtype, B, i);
            }
        nnz[p] = count;
    }
    return 0;
}

void akf_sparse_fill_panels(akf_sparse *S, const void *B, size_t sk, size_t sn, int p0, int p1, uint64_t pos) {
    int kt, kpack, esize;
    if (geometry(S->dtype, &kt, &kpack, &esize)) return;
    const int K = S->K, N = S->N;
    char *vals = S->values;
    for (int p = p0; p < p1; p++)
        for (int t = 0; t < S->ktiles; t++) {
            size_t tile = (size_t)p * S->ktiles + t;
            S->tile_off[tile] = pos;
            for (int r = 0; r < 16; r++) {
                uint64_t mask = 0;
                for (int bit = 0; bit < 16 * kpack; bit++) {
                    int n = p * 16 + bit / kpack, k = t * kt + r * kpack + bit % kpack;
                    if (n >= N || k >= K) continue;
                    size_t i = (size_t)k * sk + (size_t)n * sn;
                    if (!is_nonzero(S->dtype, B, i)) continue;
                    mask |= 1ull << bit;
                    memcpy(vals + pos * (size_t)esize, (const char *)B + i * (size_t)esize, (size_t)esize);
                    if (S->dtype == AKF_INT8) S->colsum[n] += ((const int8_t *)B)[i];
                    pos++;
                }
                if (S->dtype == AKF_BF16) ((uint32_t *)S->masks)[tile * 16 + r] = (uint32_t)mask;
                else ((uint64_t *)S->masks)[tile * 16 + r] = mask;
            }
        }
}

void akf_sparse_finish(akf_sparse *S) {
    S->tile_off[(size_t)S->panels * S->ktiles] = S->nnz;
    akf_sparse_index(S);
}

static akf_sparse *sparse_pack(int dtype, int K, int N, const void *B, size_t sk, size_t sn, char *msg, size_t len) {
    int kt, kpack, esize;
    if (geometry(dtype, &kt, &kpack, &esize)) {
        snprintf(msg, len, "unknown dtype %d: use AKF_BF16 (1) or AKF_INT8 (2)", dtype);
        return NULL;
    }
    if (K <= 0 || N <= 0 || !B) {
        snprintf(msg, len, "bad shape or data: K=%d N=%d B=%p (need K > 0, N > 0, B != NULL)", K, N, B);
        return NULL;
    }
    const int panels = AKF_ROUNDUP(N, 16) / 16;
    uint64_t *counts = malloc((size_t)panels * sizeof *counts), nnz = 0;
    int bad_k, bad_n;
    if (!counts) {
        snprintf(msg, len, "out of memory packing a %dx%d sparse matrix", K, N);
        return NULL;
    }
    if (akf_sparse_count_panels(dtype, K, N, B, sk, sn, 0, panels, counts, &bad_k, &bad_n)) {
        snprintf(msg, len, "B[%d][%d] is Inf or NaN (bf16 bits 0x%04x): sparse weights must be finite", bad_k, bad_n,
                 ((const uint16_t *)B)[(size_t)bad_k * sk + (size_t)bad_n * sn]);
        free(counts);
        return NULL;
    }
    for (int p = 0; p < panels; p++) nnz += counts[p];
    free(counts);
    akf_sparse *S = akf_sparse_alloc(dtype, K, N, nnz);
    if (!S) {
        snprintf(msg, len, "out of memory packing a %dx%d sparse matrix (%llu nonzeros)", K, N, (unsigned long long)nnz);
        return NULL;
    }
    akf_sparse_fill_panels(S, B, sk, sn, 0, panels, 0);
    akf_sparse_finish(S);
    if (len) msg[0] = '\0';
    return S;
}

akf_sparse *akf_sparse_pack(int dtype, int K, int N, const void *B, char *msg, size_t len) {
    return sparse_pack(dtype, K, N, B, (size_t)N, 1, msg, len);
}

akf_sparse *akf_sparse_pack_bt(int dtype, int K, int N, const void *W, size_t ldw, char *msg, size_t len) {
    if (ldw < (size_t)K) {
        snprintf(msg, len, "row stride %zu is shorter than a row (K=%d)", ldw, K);
        return NULL;
    }
    return sparse_pack(dtype, K, N, W, 1, ldw, msg, len);
}

int akf_sparse_unpack(const akf_sparse *S, void *B) {
    int kt, kpack, esize;
    if (!S || !B || geometry(S->dtype, &kt, &kpack, &esize)) return AKF_ERR_ARG;
    memset(B, 0, (size_t)S->K * S->N * (size_t)esize);
    const char *vals = S->values;
    for (int p = 0; p < S->panels; p++)
        for (int t = 0; t < S->ktiles; t++) {
            size_t tile = (size_t)p * S->ktiles + t;
            uint64_t pos = S->tile_off[tile];
            for (int r = 0; r < 16; r++) {
                uint64_t mask = akf_sparse_row_mask(S, tile, r);
                for (int bit = 0; bit < 16 * kpack; bit++) {
                    if (!((mask >> bit) & 1u)) continue;
                    int n = p * 16 + bit / kpack, k = t * kt + r * kpack + bit % kpack;
                    memcpy((char *)B + ((size_t)k * S->N + n) * esize, vals + pos * esize, (size_t)esize);
                    pos++;
                }
            }
        }
    return AKF_OK;
}

void akf_sparse_info(const akf_sparse *S, struct akf_sparse_info *out) {
    memset(out, 0, sizeof *out);
    if (!S) return;
    size_t tiles = (size_t)S->panels * S->ktiles;
    out->dtype = S->dtype; out->K = S->K; out->N = S->N; out->panels = S->panels; out->ktiles = S->ktiles;
    out->nnz = S->nnz;
    out->tiles = tiles;
    for (size_t t = 0; t < tiles; t++) out->zero_tiles += S->tile_off[t + 1] == S->tile_off[t];
    out->bytes = akf_sparse_value_bytes(S) + akf_sparse_mask_bytes(S) + (tiles + 1) * sizeof(uint64_t);
}

void akf_sparse_index(akf_sparse *S) {
    /* cost of a panel: its nonzeros plus a fixed amount per non-empty tile (mask reads, the tile op) */
    const uint64_t per_tile = 64;
    S->panel_cost[0] = 0;
    for (int p = 0; p < S->panels; p++) {
        const uint64_t *off = S->tile_off + (size_t)p * S->ktiles;
        uint64_t cost = off[S->ktiles] - off[0];
        for (int k = 0; k < S->ktiles; k++) cost += off[k + 1] != off[k] ? per_tile : 0;
        S->panel_cost[p + 1] = S->panel_cost[p] + cost;
    }
}

void akf_sparse_view(const akf_sparse *S, int p0, int p1, akf_sparse *view) {
    *view = *S;
    view->masks = (char *)S->masks + (size_t)p0 * S->ktiles * 16 * (size_t)AKF_DTYPE[S->dtype].mask_bytes;
    view->tile_off = S->tile_off + (size_t)p0 * S->ktiles;
    view->panel_cost = S->panel_cost + p0;
    view->colsum = S->colsum ? S->colsum + (size_t)p0 * 16 : NULL;
    view->panels = p1 - p0;
    view->N = AKF_MIN(S->N, p1 * 16) - p0 * 16;
}

void akf_sparse_split(const akf_sparse *S, int nthreads, int t, int *p0, int *p1) {
    const uint64_t *cost = S->panel_cost, base = cost[0]; /* a view's running sum starts where its panels do */
    const uint64_t total = cost[S->panels] - base;
    uint64_t lo = total * (uint64_t)t / (uint64_t)nthreads, hi = total * (uint64_t)(t + 1) / (uint64_t)nthreads;
    *p0 = S->panels;
    *p1 = S->panels;
    for (int p = 0; p < S->panels; p++) {
        /* a panel belongs to the thread whose share holds the panel's midpoint */
        uint64_t mid = cost[p] - base + (cost[p + 1] - cost[p]) / 2;
        if (*p0 == S->panels && mid >= lo) *p0 = p;
        if (mid >= hi && (t + 1 < nthreads)) { *p1 = p; break; }
    }
    if (*p1 < *p0) *p1 = *p0;
}

void akf_sparse_thread_panels(const akf_sparse *S, int *p0, int *p1) {
    int nt = 1, t = 0;
#ifdef _OPENMP
    nt = omp_get_num_threads();
    t = omp_get_thread_num();
#endif
    akf_sparse_split(S, nt, t, p0, p1);
}

akf_sparse *akf_sparse_clone(const akf_sparse *S) {
    akf_sparse *D = akf_sparse_alloc(S->dtype, S->K, S->N, S->nnz);
    if (!D) return NULL;
    size_t tiles = (size_t)S->panels * S->ktiles;
    memcpy(D->masks, S->masks, akf_sparse_mask_bytes(S));
    memcpy(D->tile_off, S->tile_off, (tiles + 1) * sizeof(uint64_t));
    memcpy(D->values, S->values, akf_sparse_value_bytes(S));
    if (S->colsum) memcpy(D->colsum, S->colsum, (size_t)S->panels * 16 * sizeof(int32_t));
    akf_sparse_index(D);
    return D;
}
