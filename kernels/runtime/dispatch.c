/* Dispatch (class `portable`): every compute entry point first checks, once per process, that this host can run
 * what the variant was compiled for (all non-portable code in the library is), then picks an implementation that
 * the guard allows. No entry point ever executes an instruction the host lacks. */
#include <string.h>

#include "akf_internal.h"

static const char *AVX512_NEEDS = "avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni avx512_vbmi2";
static const char *AMX_NEEDS = "avx512f avx512bw avx512vl avx512_bf16 avx512_vnni avx512_vbmi2 amx_tile amx_int8 amx_bf16";

unsigned akf_compiled_impls(void) {
    return AKF_IMPL_REF | (akf_avx512_built() ? AKF_IMPL_AVX512 : 0) | (akf_amx_built() ? AKF_IMPL_AMX : 0);
}

static int variant_ok(void) {
    static int cached = -1; /* the guard's answer does not change within a process */
    if (cached < 0) {
        char msg[512];
        cached = akf_guard(msg, sizeof msg) == AKF_OK;
    }
    return cached;
}

unsigned akf_runnable_impls(void) {
    static int cached = -1;
    if (cached < 0) {
        char msg[256];
        unsigned built = akf_compiled_impls(), ok = variant_ok() ? AKF_IMPL_REF : 0;
        if (ok && (built & AKF_IMPL_AVX512) && akf_guard_features(AVX512_NEEDS, msg, sizeof msg) == AKF_OK)
            ok |= AKF_IMPL_AVX512;
        if (ok && (built & AKF_IMPL_AMX) && akf_guard_features(AMX_NEEDS, msg, sizeof msg) == AKF_OK) ok |= AKF_IMPL_AMX;
        cached = (int)ok;
    }
    return (unsigned)cached;
}

/* The implementation to run, or -status. */
static int pick(int impl) {
    unsigned ok = akf_runnable_impls();
    if (!variant_ok()) return -AKF_ERR_CPU;
    if (impl == AKF_IMPL_BEST) return (ok & AKF_IMPL_AMX) ? AKF_IMPL_AMX : (ok & AKF_IMPL_AVX512) ? AKF_IMPL_AVX512 : AKF_IMPL_REF;
    if (impl != AKF_IMPL_REF && impl != AKF_IMPL_AVX512 && impl != AKF_IMPL_AMX) return -AKF_ERR_ARG;
    if (!(akf_compiled_impls() & (unsigned)impl)) return -AKF_ERR_NOT_BUILT;
    return (ok & (unsigned)impl) ? impl : -AKF_ERR_CPU;
}

int akf_gemm_bf16(int impl, int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {
    if (M < 0 || N < 0 || K < 0 || (!A && M && K) || (!Bp && K && N) || (!C && M && N)) return AKF_ERR_ARG;
    int chosen = pick(impl);
    if (chosen < 0) return -chosen;
    if (M == 0 || N == 0) return AKF_OK;
    if (K == 0) { memset(C, 0, sizeof *C * (size_t)M * N); return AKF_OK; }
    switch (chosen) {
    case AKF_IMPL_AMX: return akf_gemm_bf16_amx(M, N, K, A, Bp, C);
    case AKF_IMPL_AVX512: return akf_gemm_bf16_avx512(M, N, K, A, Bp, C);
    default: return akf_gemm_bf16_ref(M, N, K, A, Bp, C);
    }
}

int akf_gemm_int8(int impl, int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp, const float *bs,
                  float *C) {
    if (M < 0 || N < 0 || K < 0 || (!A && M && K) || (!Bp && N) || (!C && M && N) || (!as && M) || (!bs && N))
        return AKF_ERR_ARG;
    int chosen = pick(impl);
    if (chosen < 0) return -chosen;
    if (M == 0 || N == 0) return AKF_OK;
    if (K == 0) { memset(C, 0, sizeof *C * (size_t)M * N); return AKF_OK; }
    switch (chosen) {
    case AKF_IMPL_AMX: return akf_gemm_int8_amx(M, N, K, A, as, Bp, bs, C);
    case AKF_IMPL_AVX512: return akf_gemm_int8_avx512(M, N, K, A, as, Bp, bs, C);
    default: return akf_gemm_int8_ref(M, N, K, A, as, Bp, bs, C);
    }
}

int akf_spmm_bf16(int impl, int M, const uint16_t *A, const akf_sparse *B, float *C) {
    if (M < 0 || !B || B->dtype != AKF_BF16 || (!A && M) || (!C && M)) return AKF_ERR_ARG;
    int chosen = pick(impl);
    if (chosen < 0) return -chosen;
    if (M == 0) return AKF_OK;
    switch (chosen) {
    case AKF_IMPL_AMX: return akf_spmm_bf16_amx(M, A, B, C);
    case AKF_IMPL_AVX512: return akf_spmm_bf16_avx512(M, A, B, C);
    default: return akf_spmm_bf16_ref(M, A, B, C);
    }
}

int akf_spmm_int8(int impl, int M, const int8_t *A, const float *as, const akf_sparse *B, const float *bs, float *C) {
    if (M < 0 || !B || B->dtype != AKF_INT8 || (!A && M) || (!C && M) || (!as && M) || !bs) return AKF_ERR_ARG;
    int chosen = pick(impl);
    if (chosen < 0) return -chosen;
    if (M == 0) return AKF_OK;
    switch (chosen) {
    case AKF_IMPL_AMX: return akf_spmm_int8_amx(M, A, as, B, bs, C);
    case AKF_IMPL_AVX512: return akf_spmm_int8_avx512(M, A, as, B, bs, C);
    default: return akf_spmm_int8_ref(M, A, as, B, bs, C);
    }
}
