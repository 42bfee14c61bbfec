/* Internal declarations shared by the kernel units. Declarations only: no inline ISA-specific code here,
 * because an inline function compiled at two ISA levels can leave the linker with the wrong copy. */
#ifndef AKF_INTERNAL_H
#define AKF_INTERNAL_H

#include "amxforge_kernels.h"

#define AKF_ROUNDUP(x, m) ((((x) + (m) - 1) / (m)) * (m))

/* Each returns AKF_ERR_NOT_BUILT when its ISA was not enabled for this variant. */
int akf_gemm_bf16_ref(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C);
int akf_gemm_bf16_avx512(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C);
int akf_gemm_bf16_amx(int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C);
int akf_avx512_built(void);
int akf_amx_built(void);

/* Index of element (k, n) in the packed B. */
size_t akf_bf16_packed_index(int K, int k, int n);

#endif
