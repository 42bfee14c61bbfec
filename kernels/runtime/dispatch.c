/* Dispatch (class `portable`): picks an implementation only after the guard said the host can run it. */
#include <string.h>

#include "akf_internal.h"

static const char *AVX512_NEEDS = "avx512f avx512bw avx512vl avx512_bf16 avx512_vnni";
static const char *AMX_NEEDS = "avx512f avx512bw avx512vl amx_tile amx_int8 amx_bf16";

unsigned akf_compiled_impls(void) {
    return AKF_IMPL_REF | (akf_avx512_built() ? AKF_IMPL_AVX512 : 0) | (akf_amx_built() ? AKF_IMPL_AMX : 0);
}

unsigned akf_runnable_impls(void) {
    static int cached = -1; /* the guard's answer does not change within a process */
    if (cached < 0) {
        char msg[256];
        unsigned built = akf_compiled_impls(), ok = AKF_IMPL_REF;
        if ((built & AKF_IMPL_AVX512) && akf_guard_features(AVX512_NEEDS, msg, sizeof msg) == AKF_OK)
            ok |= AKF_IMPL_AVX512;
        if ((built & AKF_IMPL_AMX) && akf_guard_features(AMX_NEEDS, msg, sizeof msg) == AKF_OK) ok |= AKF_IMPL_AMX;
        cached = (int)ok;
    }
    return (unsigned)cached;
}

static int pick(int impl) {
    unsigned ok = akf_runnable_impls();
    if (impl == AKF_IMPL_BEST) return (ok & AKF_IMPL_AMX) ? AKF_IMPL_AMX : (ok & AKF_IMPL_AVX512) ? AKF_IMPL_AVX512 : AKF_IMPL_REF;
    if (!(akf_compiled_impls() & (unsigned)impl)) return -AKF_ERR_NOT_BUILT;
    return (ok & (unsigned)impl) ? impl : -AKF_ERR_CPU;
}

size_t akf_bf16_packed_elems(int K, int N) { return (size_t)AKF_ROUNDUP(K, 32) * (size_t)AKF_ROUNDUP(N, 16); }

size_t akf_bf16_packed_index(int K, int k, int n) {
    size_t kp = (size_t)AKF_ROUNDUP(K, 32);
    return (((size_t)(n / 16) * (kp / 2) + (size_t)(k / 2)) * 16 + (size_t)(n % 16)) * 2 + (size_t)(k & 1);
}

void akf_bf16_pack_b(int K, int N, const uint16_t *B, uint16_t *Bp) {
    memset(Bp, 0, akf_bf16_packed_elems(K, N) * sizeof *Bp);
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) Bp[akf_bf16_packed_index(K, k, n)] = B[(size_t)k * N + n];
}

int akf_gemm_bf16(int impl, int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {
    if (M < 0 || N < 0 || K < 0 || (!A && M && K) || (!Bp && K && N) || (!C && M && N)) return AKF_ERR_ARG;
    int chosen = pick(impl);
    if (chosen < 0) return -chosen;
    switch (chosen) {
    case AKF_IMPL_AMX: return akf_gemm_bf16_amx(M, N, K, A, Bp, C);
    case AKF_IMPL_AVX512: return akf_gemm_bf16_avx512(M, N, K, A, Bp, C);
    default: return akf_gemm_bf16_ref(M, N, K, A, Bp, C);
    }
}
