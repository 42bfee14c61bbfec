/* The linker's side of the handler for ik_llama.cpp's matmul entry (class `portable`): with -Wl,--wrap=iqk_mul_mat_4d
 * every call of the entry outside its own object file reaches __wrap_iqk_mul_mat_4d, which runs our kernels where
 * the handler takes the call and the fork's own function (__real_iqk_mul_mat_4d) for everything else. Only in the
 * archive the fork links (libamxforge_hook.a): __real_ is the fork's symbol, resolved in that link. */
#include <stdbool.h>

#include "amxforge_kernels.h"

__attribute__((constructor)) static void amxforge_hook_loaded(void) { akf_hook_load(); }

bool __real_iqk_mul_mat_4d(long Nx, long Ny, long ne00, long ne02, long ne03, long ne12, long ne13, long nb02,
                           long nb03, long nb12, long nb13, long nb2, long nb3, int typeA, const void *A, long strideA,
                           int typeB, const void *B, long strideB, float *C, long stride_C, int ith, int nth);

bool __wrap_iqk_mul_mat_4d(long Nx, long Ny, long ne00, long ne02, long ne03, long ne12, long ne13, long nb02,
                           long nb03, long nb12, long nb13, long nb2, long nb3, int typeA, const void *A, long strideA,
                           int typeB, const void *B, long strideB, float *C, long stride_C, int ith, int nth);

bool __wrap_iqk_mul_mat_4d(long Nx, long Ny, long ne00, long ne02, long ne03, long ne12, long ne13, long nb02,
                           long nb03, long nb12, long nb13, long nb2, long nb3, int typeA, const void *A, long strideA,
                           int typeB, const void *B, long strideB, float *C, long stride_C, int ith, int nth) {
    if (akf_hook_mul_mat_4d(Nx, Ny, ne00, ne02, ne03, ne12, ne13, nb02, nb03, nb12, nb13, nb2, nb3, typeA, A, strideA,
                            typeB, B, strideB, C, stride_C, ith, nth))
        return true;
    return __real_iqk_mul_mat_4d(Nx, Ny, ne00, ne02, ne03, ne12, ne13, nb02, nb03, nb12, nb13, nb2, nb3, typeA, A,
                                 strideA, typeB, B, strideB, C, stride_C, ith, nth);
}
