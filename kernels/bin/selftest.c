/* amxforge-selftest (class `portable`): runs on any x86-64 CPU. It asks the guard first, so a variant binary on
 * a host without its features prints why and exits 2 instead of dying with SIGILL; then it checks every
 * implementation this variant compiled against the reference and prints one JSON line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amxforge_kernels.h"

static uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

int main(void) {
    char msg[512];
    int status = akf_guard(msg, sizeof msg);
    if (status != AKF_OK) {
        fprintf(stderr, "amxforge-selftest: variant %s cannot run on this host: %s\n", akf_variant(), msg);
        return AKF_EXIT_UNSUPPORTED;
    }
    const int M = 37, N = 45, K = 77;
    uint16_t *A = malloc(sizeof *A * M * K), *B = malloc(sizeof *B * K * N);
    uint16_t *Bp = malloc(sizeof *Bp * akf_bf16_packed_elems(K, N));
    float *ref = malloc(sizeof *ref * M * N), *out = malloc(sizeof *out * M * N);
    unsigned seed = 12345;
    for (int i = 0; i < M * K; i++) A[i] = f32_to_bf16((float)((seed = seed * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f);
    for (int i = 0; i < K * N; i++) B[i] = f32_to_bf16((float)((seed = seed * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f);
    akf_bf16_pack_b(K, N, B, Bp);
    akf_gemm_bf16(AKF_IMPL_REF, M, N, K, A, Bp, ref);

    static const struct { int impl; const char *name; } impls[] = {{AKF_IMPL_AVX512, "avx512"}, {AKF_IMPL_AMX, "amx"}};
    int failed = 0;
    printf("{\"variant\": \"%s\", \"compiled\": %u, \"runnable\": %u, \"checks\": {", akf_variant(),
           akf_compiled_impls(), akf_runnable_impls());
    int first = 1;
    for (size_t t = 0; t < sizeof impls / sizeof impls[0]; t++) {
        if (!(akf_runnable_impls() & (unsigned)impls[t].impl)) continue;
        memset(out, 0, sizeof *out * M * N);
        int rc = akf_gemm_bf16(impls[t].impl, M, N, K, A, Bp, out);
        double worst = 0.0;
        for (int i = 0; i < M * N; i++) {
            double err = fabs((double)out[i] - ref[i]) / (1.0 + fabs(ref[i]));
            if (err > worst) worst = err;
        }
        int ok = rc == AKF_OK && worst < 1e-4;
        failed |= !ok;
        printf("%s\"%s\": {\"ok\": %s, \"max_rel_err\": %.3g}", first ? "" : ", ", impls[t].name,
               ok ? "true" : "false", worst);
        first = 0;
    }
    printf("}}\n");
    free(A); free(B); free(Bp); free(ref); free(out);
    return failed;
}
