/* The linker's side of the handler for ik_llama.cpp's matmul entry (class `portable`): with -Wl,--wrap=iqk_mul_mat_4d
 * every call of the entry outside its own object file reaches __wrap_iqk_mul_mat_4d, which runs our kernels where
 * the handler takes the call and the fork's own function (__real_iqk_mul_mat_4d) for everything else. Only in the
 * archive the fork links (libamxforge_hook.a): __real_ is the fork's symbol, resolved in that link.
 *
 * ik's mul_mat first offers a product with the activations as they are (f32); where the entry declines, the team
 * rounds them once to the weights' vec_dot_type (bf16 for bf16) and offers it again, together with the next matmuls
 * that share those activations (q, k and v; gate and up), without a barrier between them. So a bf16 x f32 product
 * the handler would take is declined here, before the fork's own function sees it: the handler then takes the bf16
 * call, and no thread converts the whole activation block on its own. */
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
    if (akf_hook_wants_bf16(ne02, ne03, ne12, ne13, typeA, typeB)) return false;
    if (akf_hook_mul_mat_4d(Nx, Ny, ne00, ne02, ne03, ne12, ne13, nb02, nb03, nb12, nb13, nb2, nb3, typeA, A, strideA,
                            typeB, B, strideB, C, stride_C, ith, nth))
        return true;
    const double t0 = akf_hook_timing(ith) ? akf_now() : 0.0;
    const bool done = __real_iqk_mul_mat_4d(Nx, Ny, ne00, ne02, ne03, ne12, ne13, nb02, nb03, nb12, nb13, nb2, nb3,
                                            typeA, A, strideA, typeB, B, strideB, C, stride_C, ith, nth);
    if (t0 > 0.0 && done) akf_hook_fork_time(ith, nth, akf_now() - t0);
    return done;
}
