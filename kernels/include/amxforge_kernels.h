/* amxforge kernels: one shared library, one header. Every entry point that needs AMX or AVX-512 checks the
 * portable guard first and returns an error instead of executing an instruction the host cannot run. */
#ifndef AMXFORGE_KERNELS_H
#define AMXFORGE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Implementations: the rows of toolchain/kernels.toml, ids 1..akf_impl_count() in dispatch preference order
 * (worst first); AKF_IMPL_BEST (0) runs the last one that this host can run. */
#define AKF_IMPL_BEST 0
int akf_impl_count(void);
const char *akf_impl_name(int id);  /* NULL when id is out of range */
const char *akf_impl_needs(int id); /* the CPU features it executes, space-separated */
int akf_impl_find(const char *name); /* its id, or -1 */
int akf_impl_resolve(int impl);      /* the id a call with `impl` runs here (BEST: the best), or -status */

/* Guard results; a variant binary that cannot run exits with AKF_EXIT_UNSUPPORTED after printing why. */
enum akf_status {
    AKF_OK = 0,
    AKF_ERR_CPU = 1,        /* the CPU lacks a feature (CPUID) */
    AKF_ERR_OS = 2,         /* the OS has not enabled the register state (XCR0) */
    AKF_ERR_PERMISSION = 3, /* Linux refused AMX permission (arch_prctl ARCH_REQ_XCOMP_PERM) */
    AKF_ERR_ARG = 4,        /* bad arguments */
    AKF_ERR_NOT_BUILT = 5   /* the implementation was not compiled into this variant */
};
#define AKF_EXIT_UNSUPPORTED 2

/* The variant this library was built as, and the features (Linux spellings) it needs. */
const char *akf_variant(void);
const char *akf_required_features(void);
/* Check the variant's needs (CPUID, XCR0, AMX permission). 0 = ok; else a status and a one-line message.
 * AMXFORGE_GUARD_HIDE="feat ..." makes the guard treat features as absent (tests); "xcr0_tile" and
 * "amx_permission" simulate an OS without tile state or a refused permission. */
int akf_guard(char *msg, size_t len);
/* The same check for an explicit space-separated feature list. */
int akf_guard_features(const char *features, char *msg, size_t len);
/* The check itself, for any label (the launcher uses it for each variant of its table). */
int akf_check_features(const char *variant, const char *features, char *msg, size_t len);
/* Which implementations this variant compiled in and which can run here: bit (id - 1) for each. */
unsigned akf_compiled_impls(void);
unsigned akf_runnable_impls(void);

/* Memory for packed weights: 64-byte aligned. Tile rows are 64 bytes; a packed B that is not 64-byte aligned
 * splits every tile row over two cache lines and runs about 3x slower (measured). Free with akf_free. */
void *akf_alloc(size_t bytes);
void akf_free(void *p);

/* bf16 GEMM: C[M x N] (fp32, row-major, ldc = N) = A[M x K] (bf16 bits, row-major, lda = K) x B[K x N].
 * B is prepacked in the AMX pair layout: 16-column panels, K padded to 32, each row a (k, k+1) pair
 * per column (64 bytes), zero padding. */
size_t akf_bf16_packed_elems(int K, int N);
/* fp32 -> bf16 bits, round to nearest even (the hardware conversion where the implementation has one). */
int akf_cvt_bf16(int impl, const float *in, uint16_t *out, size_t n);
void akf_bf16_pack_b(int K, int N, const uint16_t *B, uint16_t *Bp);
int akf_gemm_bf16(int impl, int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C);

/* int8 GEMM (as Q8_0 does): C[M x N] fp32 = (A s8 [M x K] x B s8 [K x N]) in int32, times a_scale[m] * b_scale[n].
 * B is prepacked in the AMX quad layout (16-column panels, K padded to 64, 4 consecutive k per column = 64 bytes
 * per row), followed by its int32 column sums (the AVX-512 VNNI path needs them). */
size_t akf_int8_packed_bytes(int K, int N);
void akf_int8_pack_b(int K, int N, const int8_t *B, uint8_t *Bp);
int akf_gemm_int8(int impl, int M, int N, int K, const int8_t *A, const float *a_scale, const uint8_t *Bp,
                  const float *b_scale, float *C);

/* Sparse weights, SparAMX-style: B in the AMX pair (bf16) / quad (int8) layout, cut into 16x64-byte tiles; each
 * tile row (64 bytes) has a bitmask (32 bits bf16, 64 bits int8) and its nonzeros packed densely. All-zero tiles
 * are skipped; threads are split by nonzeros. */
enum akf_dtype { AKF_BF16 = 1, AKF_INT8 = 2 };
typedef struct akf_sparse akf_sparse;
struct akf_sparse_info {
    int dtype, K, N, panels, ktiles;
    uint64_t nnz;           /* stored nonzero values */
    uint64_t tiles, zero_tiles;
    uint64_t bytes;         /* what a multiply reads: masks + values + tile offsets */
};
/* Pack row-major B[K x N] (bf16 bits or int8). NULL on bad input, with the reason in msg. */
akf_sparse *akf_sparse_pack(int dtype, int K, int N, const void *B, char *msg, size_t len);
/* The same from W [N rows x K] with row stride ldw elements, that is B = W^T (a fork's weights, no transposed copy). */
akf_sparse *akf_sparse_pack_bt(int dtype, int K, int N, const void *W, size_t ldw, char *msg, size_t len);
void akf_sparse_free(akf_sparse *S);
void akf_sparse_info(const akf_sparse *S, struct akf_sparse_info *out);
/* Unpack to row-major B[K x N] (for round-trip checks). */
int akf_sparse_unpack(const akf_sparse *S, void *B);
/* File format: magic "AMXFSPRS", version, dtype, sizes, FNV-1a 64 checksum; the loader checks all of them. */
int akf_sparse_save(const akf_sparse *S, const char *path, char *msg, size_t len);
akf_sparse *akf_sparse_load(const char *path, char *msg, size_t len);
int akf_spmm_bf16(int impl, int M, const uint16_t *A, const akf_sparse *B, float *C);
int akf_spmm_int8(int impl, int M, const int8_t *A, const float *a_scale, const akf_sparse *B, const float *b_scale,
                  float *C);

/* The matmul handler forks enter our kernels through (kernels/hook/mulmat.c): the arguments of ik_llama.cpp's
 * iqk_mul_mat_4d (thread ith of nth, byte strides for A and B, a float stride for C; activations f32 or bf16).
 * 1 = taken (this thread's share of C is written), 0 = declined (the caller computes it; every thread of a call
 * declines alike). */
int akf_hook_mul_mat_4d(long Nx, long Ny, long ne00, long ne02, long ne03, long ne12, long ne13, long nb02,
                        long nb03, long nb12, long nb13, long nb2, long nb3, int typeA, const void *A, long strideA,
                        int typeB, const void *B, long strideB, float *C, long stride_C, int ith, int nth);
/* 1 where the handler would rather have this product's f32 activations rounded to bf16 by the caller, once for
 * its whole team: bf16 weights, a 2-d product, the handler on and an implementation that runs here. */
int akf_hook_wants_bf16(long ne02, long ne03, long ne12, long ne13, int typeA, int typeB);
/* AMXFORGE_KERNELS_STATS: 1 where the caller of the handler is to time the fork's own function on a call the handler
 * declined and report it with akf_hook_fork_time(ith, nth, seconds), right after, on the same thread: thread 0's
 * time goes to the call's shape, every thread's to the fork's team balance. */
int akf_hook_timing(int ith);
void akf_hook_fork_time(int ith, int nth, double seconds);
struct akf_hook_totals {
    uint64_t dense, sparse, refused, repacked; /* tensors packed dense / sparse / not packed / packed again */
    size_t bytes, refused_bytes;               /* memory held by packed tensors; that the refused ones needed */
    uint64_t freed;                            /* packed forms released after their weights were unmapped */
    size_t freed_bytes;                        /* the memory those held */
    uint64_t pairs, pairs_moved;               /* dense column pairs computed; of them, by another than their owner */
    uint64_t panels, panels_moved;             /* sparse panels computed; of them, by another than their owner */
};
void akf_hook_totals(struct akf_hook_totals *out);
/* Read the environment now (a fork binary's constructor calls it: AMXFORGE_KERNELS_STATS=1 then reports at exit
 * even when no matmul ran, which is how `bench fork` tells a binary with our kernels from one without). */
void akf_hook_load(void);
/* Run implementation `impl` (AKF_IMPL_BEST: the best here) and pack sparse from `sparse_min` zeros, overriding the
 * environment (tests, embedders). Tensors packed before keep their form. */
void akf_hook_settings(int impl, double sparse_min);
/* Drop every packed tensor; no call may be running (tests, or a process whose weights are gone). */
void akf_hook_forget(void);
/* The bytes [p, p + bytes) were written or freed: the packed form of every tensor whose weights overlap them is
 * released (counted with those released with their weights) and packed anew at its next use. No call may be using
 * those tensors meanwhile (ggml's backend buffers: set_tensor, memset, clear, free). */
void akf_hook_changed(const void *p, size_t bytes);

/* Hardware limits, measured in the same run as the kernels (threads run in parallel; results are totals). */
/* Whether the limit of that name (tile_*, avx512_*, fma_*, read_bw) can be measured here: its loop's
 * implementation is built into this variant and runs on this host. */
int akf_limit_runs_here(const char *name);
/* Tile peak in GFLOP/s (bf16) or GOP/s (int8), <0 without AMX; zeros=0: random operands (the limit kernels are
 * judged against), zeros=1: all-zero operands, which the multiplier runs faster (information only). */
double akf_limit_tile_peak(int dtype, int zeros, int threads, double seconds);
/* The AMX dense kernel's 2x2 step (four tile loads, four tile ops) on operands that stay in L1, same units, <0
 * without AMX: how much of the tile peak the step itself can reach (information: nothing is judged against it). */
double akf_limit_tile_block(int dtype, int threads, double seconds);
double akf_limit_read_bw(size_t bytes, int threads, int reps);      /* GB/s of a streaming read of `bytes` */
/* The same, with every repetition's GB/s written to each[reps] (the median is returned). */
double akf_limit_read_bw_each(size_t bytes, int threads, int reps, double *each);
/* The same read, one repetition at a time, so that a benchmark can measure it beside each repetition of a kernel
 * (a ratio of the two taken seconds apart, not minutes): open fills `bytes` (NULL where the guard refuses or no
 * memory), rep returns one repetition's GB/s. */
typedef struct akf_reader akf_reader;
akf_reader *akf_reader_open(size_t bytes, int threads);
double akf_reader_rep(akf_reader *r);
void akf_reader_close(akf_reader *r);
/* fp32 FMA peak in GFLOP/s (independent VFMADD231PS chains on every thread), <0 when this variant has no FMA unit:
 * what the AVX2 kernels' bf16 prefill (widened to fp32) is judged against. */
double akf_limit_fma_peak(int threads, double seconds);
/* AVX-512 dot-product peak in GFLOP/s (bf16: independent VDPBF16PS chains) or GOP/s (int8: VPDPBUSD), <0 where the
 * avx512 implementation is not built or cannot run: what the avx512 kernels' prefill is judged against. */
double akf_limit_avx512_peak(int dtype, int threads, double seconds);
double akf_now(void);                                               /* monotonic seconds */

#ifdef __cplusplus
}
#endif
#endif
