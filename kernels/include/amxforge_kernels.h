/* amxforge kernels: one shared library, one header. Every entry point that needs AMX or AVX-512 checks the
 * portable guard first and returns an error instead of executing an instruction the host cannot run. */
#ifndef AMXFORGE_KERNELS_H
#define AMXFORGE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Implementations (bits of akf_compiled_impls()). */
enum akf_impl { AKF_IMPL_REF = 1, AKF_IMPL_AVX512 = 2, AKF_IMPL_AMX = 4, AKF_IMPL_BEST = 0 };

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
/* Which implementations this variant compiled in (AKF_IMPL_* bits) and which can run here. */
unsigned akf_compiled_impls(void);
unsigned akf_runnable_impls(void);

/* bf16 GEMM: C[M x N] (fp32, row-major, ldc = N) = A[M x K] (bf16 bits, row-major, lda = K) x B[K x N].
 * B is prepacked in the AMX pair layout: 16-column panels, K padded to 32, each row a (k, k+1) pair
 * per column (64 bytes), zero padding. */
size_t akf_bf16_packed_elems(int K, int N);
void akf_bf16_pack_b(int K, int N, const uint16_t *B, uint16_t *Bp);
int akf_gemm_bf16(int impl, int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C);

#ifdef __cplusplus
}
#endif
#endif
