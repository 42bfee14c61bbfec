/* Internal declarations shared by the kernel units. Declarations and plain data only: no inline ISA-specific
 * code here, because an inline function compiled at two ISA levels can leave the linker with the wrong copy. */
#ifndef AKF_INTERNAL_H
#define AKF_INTERNAL_H

#include "amxforge_kernels.h"

#define AKF_ROUNDUP(x, m) ((((x) + (m) - 1) / (m)) * (m))
#define AKF_MIN(a, b) ((a) < (b) ? (a) : (b))
/* Sparse kernels prefetch the values and masks of the tile this many tiles ahead (the consumer is slower than
 * DRAM per byte, so the hardware streamer alone does not keep ahead). 8 beat 4 and 16 here (M=1, 70 %: 1.91x vs
 * 1.71x over dense with 4, measured twice in one run). */
#define AKF_SPARSE_PREFETCH 8
#define AKF_PREFETCH_RANGE(lo, hi)                                                                      \
    for (const char *pf_ = (const char *)(lo); pf_ < (const char *)(hi); pf_ += 64) __builtin_prefetch(pf_, 0, 3)

/* Tile geometry: a tile is 16 rows x 64 bytes. bf16: a row holds 16 columns x 2 consecutive k (a "pair"), a tile
 * spans 32 k. int8: 16 columns x 4 k (a "quad"), a tile spans 64 k. */
#define AKF_BF16_KT 32
#define AKF_INT8_KT 64

struct akf_sparse {
    int dtype, K, N, Kp, panels, ktiles;
    uint64_t nnz;
    void *masks;        /* [panels][ktiles][16]: uint32_t (bf16) or uint64_t (int8), bit = position in the row */
    uint64_t *tile_off; /* [panels * ktiles + 1]: element offset of each tile's first value */
    void *values;       /* nonzeros in (panel, ktile, row, bit) order, padded by 64 bytes */
    int32_t *colsum;    /* int8: column sums of B over all k (the VNNI u8 x s8 correction); NULL for bf16 */
};

/* Each returns AKF_ERR_NOT_BUILT when its ISA was not enabled for this variant. nthreads: OpenMP threads. */
int akf_gemm_bf16_ref(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C);
int akf_gemm_bf16_avx512(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C);
int akf_gemm_bf16_amx(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C);
int akf_gemm_int8_ref(int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp, const float *bs,
                      float *C);
int akf_gemm_int8_avx512(int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp, const float *bs,
                         float *C);
int akf_gemm_int8_amx(int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp, const float *bs,
                      float *C);
int akf_spmm_bf16_ref(int M, const uint16_t *A, const akf_sparse *B, float *C);
int akf_spmm_bf16_avx512(int M, const uint16_t *A, const akf_sparse *B, float *C);
int akf_spmm_bf16_amx(int M, const uint16_t *A, const akf_sparse *B, float *C);
int akf_spmm_int8_ref(int M, const int8_t *A, const float *as, const akf_sparse *B, const float *bs, float *C);
int akf_spmm_int8_avx512(int M, const int8_t *A, const float *as, const akf_sparse *B, const float *bs, float *C);
int akf_spmm_int8_amx(int M, const int8_t *A, const float *as, const akf_sparse *B, const float *bs, float *C);
int akf_avx512_built(void);
int akf_amx_built(void);

/* The entry points of an ISA-specific unit: over its static gemm()/spmm() (which take the unit's own BF16/INT8
 * enum), or, when the variant does not enable its ISA, ones that say so. Plain C: nothing here is compiled at an
 * ISA level it could leak into another unit. */
#define AKF_GEMM_ENTRY_POINTS(isa)                                                                           \
    int akf_gemm_bf16_##isa(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {        \
        return gemm(BF16, M, N, K, A, NULL, Bp, NULL, C);                                                  \
    }                                                                                                      \
    int akf_gemm_int8_##isa(int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp,      \
                            const float *bs, float *C) {                                                   \
        return gemm(INT8, M, N, K, A, as, Bp, bs, C);                                                      \
    }
#define AKF_SPMM_ENTRY_POINTS(isa)                                                                           \
    int akf_spmm_bf16_##isa(int M, const uint16_t *A, const akf_sparse *B, float *C) {                     \
        return spmm(BF16, M, A, NULL, B, NULL, C);                                                         \
    }                                                                                                      \
    int akf_spmm_int8_##isa(int M, const int8_t *A, const float *as, const akf_sparse *B, const float *bs, \
                            float *C) {                                                                    \
        return spmm(INT8, M, A, as, B, bs, C);                                                             \
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
double akf_tile_peak_amx(int dtype, int zeros, int threads, double seconds);
double akf_read_bw_simd(const void *buf, size_t bytes, int threads, int reps);

akf_sparse *akf_sparse_alloc(int dtype, int K, int N, uint64_t nnz);
akf_sparse *akf_sparse_clone(const akf_sparse *S);


/* Packed-layout helpers (portable). */
size_t akf_bf16_packed_index(int K, int k, int n);
size_t akf_int8_packed_index(int K, int k, int n);
/* A rows copied into tile blocks: [M/16 blocks][Kp/kt tiles][16 rows][64 bytes], zero padded. */
size_t akf_tile_a_bytes(int M, int K, int kt_elems, int elem_size);
void akf_tile_a(int M, int K, int kt_elems, int elem_size, const void *A, void *Ap);
/* Thread t's panel range [p0, p1) of a sparse matrix, balanced by nonzeros. */
void akf_sparse_split(const akf_sparse *S, int nthreads, int t, int *p0, int *p1);
/* The same for the calling thread of the enclosing OpenMP team. */
void akf_sparse_thread_panels(const akf_sparse *S, int *p0, int *p1);

#endif
