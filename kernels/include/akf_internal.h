/* Internal declarations shared by the kernel units. Declarations and plain data only: no inline ISA-specific
 * code here, because an inline function compiled at two ISA levels can leave the linker with the wrong copy. */
#ifndef AKF_INTERNAL_H
#define AKF_INTERNAL_H

#include "amxforge_kernels.h"
#include "akf_table.h" /* generated per variant from toolchain/kernels.toml (build/VARIANT/gen/) */

#define AKF_ROUNDUP(x, m) ((((x) + (m) - 1) / (m)) * (m))
#define AKF_MIN(a, b) ((a) < (b) ? (a) : (b))
/* Sparse kernels prefetch the values and masks of the tile this many tiles ahead (the consumer is slower than
 * DRAM per byte, so the hardware streamer alone does not keep ahead). 8 beat 4 and 16 here (M=1, 70 %: 1.91x vs
 * 1.71x over dense with 4, measured twice in one run). Why a one-thread sparse decode gains less than its bytes
 * (the builder, avx512, M=1, ns per 16x32 tile): 512x2048 from L2 takes 27-30 at 50 and 90 % zeros alike, whether
 * the rows are expanded or only loaded, the load kept apart from the expand (gcc folds the two into VPEXPANDW from
 * memory) or not, with 4 or 8 accumulators (so neither the expand nor the dot-product latency); 2048x5632 from
 * memory 51-61 at 50 %, whose 576 bytes the dense decode's rate (70 ns per 1 KB) would bring in 39: the two add up.
 * Prefetching 4-32 tiles ahead, into L2 instead of L1, or a fixed 10 lines per tile 2-8 KB ahead of the values did
 * not move it beyond the runs' spread. */
#define AKF_SPARSE_PREFETCH 8
#define AKF_PREFETCH_RANGE(lo, hi)                                                                      \
    for (const char *pf_ = (const char *)(lo); pf_ < (const char *)(hi); pf_ += 64) __builtin_prefetch(pf_, 0, 3)

/* Element types, from the table: a tile is 16 rows x 64 bytes; a row holds 16 columns x one group of k (a bf16
 * pair, an int8 quad) as 32-bit words, so a tile spans 16 groups of k and a sparse row mask has one bit per value.
 * Indexed by the public AKF_BF16 / AKF_INT8 ids; constant-folded where the dtype is a constant. */
struct akf_dtype_info { const char *name; int elem_bytes, group, tile_k, mask_bytes; };
#define AKF_DTYPE_ROW(id, name, NAME, elem_bytes, group) [id] = {#name, elem_bytes, group, 16 * (group), 2 * (group)},
static const struct akf_dtype_info AKF_DTYPE[AKF_DTYPE_COUNT + 1] = {AKF_DTYPES(AKF_DTYPE_ROW)};
#undef AKF_DTYPE_ROW
#define AKF_DTYPE_ID_CHECK(id, name, NAME, elem_bytes, group) \
    _Static_assert(AKF_##NAME == (id), "kernels.toml dtype ids must match the public enum akf_dtype");
AKF_DTYPES(AKF_DTYPE_ID_CHECK)
#undef AKF_DTYPE_ID_CHECK
#define AKF_BF16_KT (AKF_DTYPE[AKF_BF16].tile_k)
#define AKF_INT8_KT (AKF_DTYPE[AKF_INT8].tile_k)

struct akf_sparse {
    int dtype, K, N, Kp, panels, ktiles;
    uint64_t nnz;
    void *masks;        /* [panels][ktiles][16]: uint32_t (bf16) or uint64_t (int8), bit = position in the row */
    uint64_t *tile_off; /* [panels * ktiles + 1]: element offset of each tile's first value */
    void *values;       /* nonzeros in (panel, ktile, row, bit) order, padded by 64 bytes */
    int32_t *colsum;    /* int8: column sums of B over all k (the VNNI u8 x s8 correction); NULL for bf16 */
    uint64_t *panel_cost; /* [panels + 1]: running sum of each panel's work (nonzeros, and 64 per non-empty tile),
                           * set by akf_sparse_index once the offsets are: the thread split reads only this */
};

/* Every implementation of the table has these five entry points (a stub returning AKF_ERR_NOT_BUILT where the
 * variant does not compile it). */
#define AKF_DECLARE_ENTRY_POINTS(id, isa, needs, built, bench)                                                   \
    int akf_gemm_bf16_##isa(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C);             \
    int akf_gemm_int8_##isa(int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp,          \
                            const float *bs, float *C);                                                        \
    int akf_spmm_bf16_##isa(int M, const uint16_t *A, const akf_sparse *B, float *C);                          \
    int akf_spmm_int8_##isa(int M, const int8_t *A, const float *as, const akf_sparse *B, const float *bs,     \
                            float *C);                                                                         \
    int akf_cvt_bf16_##isa(const float *in, uint16_t *out, size_t n);
AKF_IMPLEMENTATIONS(AKF_DECLARE_ENTRY_POINTS)

/* fp32 -> bf16, round to nearest even, NaN kept a (quiet) NaN (portable, runtime/pack.c): the reference's
 * conversion and every implementation's tail. */
uint16_t akf_bf16_round(float f);
/* bf16 -> fp32, exact: bf16 is the top half of fp32 (portable, runtime/pack.c) */
float akf_bf16_to_f32(uint16_t h);

/* The entry points of an ISA-specific unit: over its static gemm()/spmm() (which take the public AKF_BF16 /
 * AKF_INT8 ids), or, when the variant does not build the implementation, ones that say so. Plain C: nothing here
 * is compiled at an ISA level it could leak into another unit. */
#define AKF_GEMM_ENTRY_POINTS(isa)                                                                           \
    int akf_gemm_bf16_##isa(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {        \
        return gemm(AKF_BF16, M, N, K, A, NULL, Bp, NULL, C);                                              \
    }                                                                                                      \
    int akf_gemm_int8_##isa(int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp,      \
                            const float *bs, float *C) {                                                   \
        return gemm(AKF_INT8, M, N, K, A, as, Bp, bs, C);                                                  \
    }                                                                                                      \
    int akf_cvt_bf16_##isa(const float *in, uint16_t *out, size_t n) {                                     \
        cvt_bf16(in, out, n);                                                                              \
        return AKF_OK;                                                                                     \
    }
#define AKF_SPMM_ENTRY_POINTS(isa)                                                                           \
    int akf_spmm_bf16_##isa(int M, const uint16_t *A, const akf_sparse *B, float *C) {                     \
        return spmm(AKF_BF16, M, A, NULL, B, NULL, C);                                                     \
    }                                                                                                      \
    int akf_spmm_int8_##isa(int M, const int8_t *A, const float *as, const akf_sparse *B, const float *bs, \
                            float *C) {                                                                    \
        return spmm(AKF_INT8, M, A, as, B, bs, C);                                                         \
    }
#define AKF_GEMM_NOT_BUILT(isa)                                                                              \
    int akf_gemm_bf16_##isa(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {        \
        (void)M; (void)N; (void)K; (void)A; (void)Bp; (void)C;                                             \
        return AKF_ERR_NOT_BUILT;                                                                          \
    }                                                                                                      \
    int akf_gemm_int8_##isa(int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp,      \
                            const float *bs, float *C) {                                                   \
        (void)M; (void)N; (void)K; (void)A; (void)as; (void)Bp; (void)bs; (void)C;                         \
        return AKF_ERR_NOT_BUILT;                                                                          \
    }                                                                                                      \
    int akf_cvt_bf16_##isa(const float *in, uint16_t *out, size_t n) {                                     \
        (void)in; (void)out; (void)n;                                                                      \
        return AKF_ERR_NOT_BUILT;                                                                          \
    }
#define AKF_SPMM_NOT_BUILT(isa)                                                                              \
    int akf_spmm_bf16_##isa(int M, const uint16_t *A, const akf_sparse *B, float *C) {                     \
        (void)M; (void)A; (void)B; (void)C;                                                                \
        return AKF_ERR_NOT_BUILT;                                                                          \
    }                                                                                                      \
    int akf_spmm_int8_##isa(int M, const int8_t *A, const float *as, const akf_sparse *B, const float *bs, \
                            float *C) {                                                                    \
        (void)M; (void)A; (void)as; (void)B; (void)bs; (void)C;                                            \
        return AKF_ERR_NOT_BUILT;                                                                          \
    }
/* modes of the tile peak loop: random operands, zero operands, the dense kernel's 2x2 step with its tile loads */
enum { AKF_TILE_RANDOM, AKF_TILE_ZEROS, AKF_TILE_BLOCK };
/* AMX units only (gemm_amx.c): configure the eight tiles, the first row_tiles with `rows` rows, the rest full. */
void akf_amx_load_config(int rows, int row_tiles);
double akf_tile_peak_amx(int dtype, int mode, int threads, double seconds);
double akf_fma_peak(int threads, double seconds);
double akf_avx512_peak(int dtype, int threads, double seconds);
/* A register-only peak loop: chains(iters, seed) on every thread at once, iters calibrated so the timed pass lasts
 * `seconds` (a call with more threads than any before warms up for 0.5 s: a cold core runs slower); returns the
 * timed pass's seconds and the iterations in *iters. */
double akf_time_chains(float (*chains)(long iters, float seed), int threads, double seconds, long *iters);

akf_sparse *akf_sparse_alloc(int dtype, int K, int N, uint64_t nnz);
akf_sparse *akf_sparse_clone(const akf_sparse *S);


/* Packed-layout helpers (portable). */
size_t akf_bf16_packed_index(int K, int k, int n);
size_t akf_int8_packed_index(int K, int k, int n);
/* A rows copied into tile blocks: [M/16 blocks][Kp/kt tiles][16 rows][64 bytes], zero padded. */
size_t akf_tile_a_bytes(int M, int K, int kt_elems, int elem_size);
/* Inside an OpenMP parallel region: each thread of the team tiles its share of the row blocks, then all wait for
 * the whole of A (a serial copy of a 4 MB A costs as much as the multiply itself at 16 threads). */
void akf_tile_a_share(int M, int K, int kt_elems, int elem_size, const void *A, void *Ap);
/* Scratch of the calling thread kept between calls (A tiles, partial sums, expanded weights), 64-byte aligned, 2 MB pages from
 * 4 MB; NULL when out of memory. Valid until the next call with the same slot on this thread. */
enum { AKF_SCRATCH_A, AKF_SCRATCH_ACC, AKF_SCRATCH_B, AKF_SCRATCH_SLOTS };
void *akf_scratch(int slot, size_t bytes);
/* A in a kernel's own form (the layout's id and the dtype: AKF_A_FORM) in the calling thread's AKF_SCRATCH_A, for
 * the caller (or its team) to fill; *kept = 1 where it is there already: the caller said this call multiplies the
 * same activations as the thread's last (akf_set_same_a: the matmul handler's later claims of one product, each a
 * kernel call) and that call put this A there in the same form. A pruned model's prefill through the handler
 * claiming a quarter at a time (the builder, 2 threads, 70 % zeros, pp128, 3 alternated rounds) tiled A for AMX on
 * every claim: 1476-1518 t/s against 1902-1929 claiming all at once; kept, 1893-1963 against 1922-1942. (Read in
 * place instead, as the dense kernel reads a narrow product's A, it ran 1270-1324 and 1778-1847: a sparse panel
 * loads every A tile again for each expanded B tile.) The avx2 and avx512 kernels' copies alike: a dense prefill
 * claiming half at a time (the default) against all at once (the builder, 2 threads, pp128, 3 alternated rounds) ran
 * 225-232 against 261-265 t/s (avx2) and 254-273 against 274-284 (avx512) while each claim prepared A again; kept,
 * in a later run of both: 280-288 against 272-286 and 300-301 against 297-300 (before, in that run: 244-253 against
 * 278-282, 281-283 against 296-300). Call outside the parallel region; NULL when out of memory. */
enum { AKF_A_TILES, AKF_A_GROUPS, AKF_A_GROUPS_KP, AKF_A_AVX2_BLOCKS };
#define AKF_A_FORM(layout, dtype) ((layout) * 8 + (dtype))
void *akf_scratch_a_kept(int form, int M, int K, const void *A, size_t bytes, int *kept);
/* A's tile blocks (akf_tile_a_share's layout), kept as above */
void *akf_scratch_a_tiles(int M, int K, int kt_elems, int elem_size, const void *A, int *kept);
/* Per thread, 0 at its start: the handler sets it after a product's first claim and clears it once the product is
 * done, so that no later call of the thread is taken for that product's. */
void akf_set_same_a(int same);
/* Threads streaming weights at once, which the kernels' tuning tables are keyed by: the OpenMP team a call starts,
 * or, where the calling thread is one of a fork's team running our kernels one thread each (the matmul handler),
 * the size of that team, told with akf_set_streams (per thread; 0 forgets it). */
int akf_streams(void);
void akf_set_streams(int n);

/* The names of the implementations whose bits are set (akf_runnable_impls' order), space-separated, into out;
 * "none" when no bit is. Returns out. */
const char *akf_impl_names(unsigned bits, char *out, size_t len);
/* The avx512 implementation's register block (its two units, compiled alike; in dense/gemm_avx512.c): rows r0..r0+R-1
 * (R <= 8) of A as 32-bit groups (ag: row r0's first, G groups a row) times panel p, and p + 1 where nn = 2, of B in
 * the dense pair / quad layout (b0, b1: G rows of 64 bytes each), into C (N floats a row, panel p at column 16 p); int8
 * with its scales and the column sums' correction. The dense kernel runs it over its packed panels, the sparse
 * kernel's products of many rows over panels expanded once. */
void akf_avx512_row_block(int dt, int R, int nn, int G, const uint32_t *ag, const char *b0, const char *b1, int N,
                          int r0, int p, float *C, const float *as, const float *bs, const int32_t *colsum);
/* The avx2 implementation's blocked product (its two units, compiled alike; in dense/gemm_avx2.c): C = A x B for
 * products of many rows, B packed (Bp) or, bf16 only, sparse (S, Bp NULL): the sparse kernel's products of many rows
 * run the dense kernel's blocking over tiles expanded a K block at a time (akf_avx2_sparse_widen, in
 * sparse/spmm_avx2.c: panel p's k0..k0+kc-1, kc a multiple of the tile's k, as fp32 rows of 16 columns). */
int akf_avx2_blocked(int dt, int M, int N, int K, const void *A, const float *as, const void *Bp, const akf_sparse *S,
                     const float *bs, float *C);
void akf_avx2_sparse_widen(const akf_sparse *S, int p, int k0, int kc, char *out);
/* Row `row` of A widened for the AVX2 kernels, zero padded to Kp: fp32 (bf16) or s16 (int8) values. */
void akf_widen_a_row(int dtype, const void *A, int K, int Kp, int row, void *out);
/* Row `row` of A as the VDPBF16PS / VPDPBUSD kernels broadcast it, zero padded to Kp: bf16 pairs as they lie, int8
 * quads shifted to u8 (x ^ 0x80). A copy, not a loop per element: a sparse decode does it on every call, and a call
 * can be one panel's work (the matmul handler's team moves single panels). */
void akf_group_a_row(int dtype, const void *A, int K, int Kp, int row, void *out);
/* Fill S->panel_cost from the tile offsets (after packing, loading or cloning). */
void akf_sparse_index(akf_sparse *S);
/* Packing in pieces that threads can share, panel (16 columns of B) by panel; B's element (k, n) at k * sk + n * sn.
 * Count the nonzeros of panels [p0, p1) into nnz[p] (-1 at a bf16 Inf or NaN, its place in *bad_k, *bad_n); then,
 * into S allocated for their sum, fill panels [p0, p1), the first of them starting at value `pos` (the nonzeros of the
 * panels before it); akf_sparse_finish once all are filled. akf_bf16_pack_bt_panels: panels [p0, p1) of W [N rows x
 * K] (bf16 bits, row stride ldw elements), that is B = W^T, in the dense pair layout. */
int akf_sparse_count_panels(int dtype, int K, int N, const void *B, size_t sk, size_t sn, int p0, int p1, uint64_t *nnz,
                            int *bad_k, int *bad_n);
void akf_sparse_fill_panels(akf_sparse *S, const void *B, size_t sk, size_t sn, int p0, int p1, uint64_t pos);
void akf_sparse_finish(akf_sparse *S);
void akf_bf16_pack_bt_panels(int K, int N, const uint16_t *W, size_t ldw, uint16_t *Bp, int p0, int p1);
/* Panels [p0, p1) of S as a matrix of their own (its N the columns they hold), sharing S's arrays. */
void akf_sparse_view(const akf_sparse *S, int p0, int p1, akf_sparse *view);
/* Thread t's panel range [p0, p1) of a sparse matrix, balanced by nonzeros. */
void akf_sparse_split(const akf_sparse *S, int nthreads, int t, int *p0, int *p1);
/* The same for the calling thread of the enclosing OpenMP team. */
void akf_sparse_thread_panels(const akf_sparse *S, int *p0, int *p1);
/* Bytes of a sparse matrix's sections (masks, tile offsets, values, column sums): one place for the layout. */
size_t akf_sparse_mask_bytes(const akf_sparse *S);
size_t akf_sparse_value_bytes(const akf_sparse *S);
/* The bitmask of row r (0-15) of a tile, whatever the dtype's mask width. */
uint64_t akf_sparse_row_mask(const akf_sparse *S, size_t tile, int r);

#endif
