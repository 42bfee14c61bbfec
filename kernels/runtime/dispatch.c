/* Dispatch (class `portable`): every compute entry point first checks, once per process, that this host can run
 * what the variant was compiled for (all non-portable code in the library is), then runs the implementation asked
 * for, or the best one the guard allows. The implementations are the rows of toolchain/kernels.toml (akf_table.h):
 * no list of them is written here. No entry point ever executes an instruction the host lacks. */
#include <stdio.h>
#include <string.h>

#include "akf_internal.h"

typedef int (*gemm_bf16_fn)(int, int, int, const uint16_t *, const uint16_t *, float *);
typedef int (*gemm_int8_fn)(int, int, int, const int8_t *, const float *, const uint8_t *, const float *, float *);
typedef int (*spmm_bf16_fn)(int, const uint16_t *, const akf_sparse *, float *);
typedef int (*spmm_int8_fn)(int, const int8_t *, const float *, const akf_sparse *, const float *, float *);
typedef int (*cvt_bf16_fn)(const float *, uint16_t *, size_t);

static const struct impl {
    const char *name, *needs;
    int built;
    gemm_bf16_fn gemm_bf16;
    gemm_int8_fn gemm_int8;
    spmm_bf16_fn spmm_bf16;
    spmm_int8_fn spmm_int8;
    cvt_bf16_fn cvt_bf16;
} IMPLS[AKF_IMPL_COUNT + 1] = {
#define ROW(id, isa, needs, built, bench) \
    [id] = {#isa, needs, built, akf_gemm_bf16_##isa, akf_gemm_int8_##isa, akf_spmm_bf16_##isa, akf_spmm_int8_##isa, \
            akf_cvt_bf16_##isa},
    AKF_IMPLEMENTATIONS(ROW)
#undef ROW
};

const char *akf_variant(void) { return AKF_VARIANT; }
const char *akf_required_features(void) { return AKF_REQUIRED; }
int akf_guard_features(const char *features, char *msg, size_t len) {
    return akf_check_features(AKF_VARIANT, features, msg, len);
}
int akf_guard(char *msg, size_t len) { return akf_guard_features(AKF_REQUIRED, msg, len); }

int akf_impl_count(void) { return AKF_IMPL_COUNT; }
const char *akf_impl_name(int id) { return id >= 1 && id <= AKF_IMPL_COUNT ? IMPLS[id].name : NULL; }
const char *akf_impl_needs(int id) { return id >= 1 && id <= AKF_IMPL_COUNT ? IMPLS[id].needs : NULL; }
int akf_impl_find(const char *name) {
    for (int id = 1; name && id <= AKF_IMPL_COUNT; id++)
        if (strcmp(IMPLS[id].name, name) == 0) return id;
    return -1;
}

unsigned akf_compiled_impls(void) {
    unsigned bits = 0;
    for (int id = 1; id <= AKF_IMPL_COUNT; id++) bits |= IMPLS[id].built ? 1u << (id - 1) : 0u;
    return bits;
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
        char msg[512];
        unsigned ok = 0;
        for (int id = 1; variant_ok() && id <= AKF_IMPL_COUNT; id++)
            if (IMPLS[id].built && akf_guard_features(IMPLS[id].needs, msg, sizeof msg) == AKF_OK) ok |= 1u << (id - 1);
        cached = (int)ok;
    }
    return (unsigned)cached;
}

const char *akf_impl_names(unsigned bits, char *out, size_t len) {
    size_t used = 0;
    if (len) out[0] = '\0';
    for (int id = 1; id <= AKF_IMPL_COUNT && used < len; id++)
        if (bits & (1u << (id - 1)))
            used += (size_t)snprintf(out + used, len - used, "%s%s", used ? " " : "", IMPLS[id].name);
    if (!used && len) snprintf(out, len, "none");
    return out;
}

/* The implementation to run, or NULL with *status set. */
static const struct impl *pick(int impl, int *status) {
    unsigned ok = akf_runnable_impls();
    *status = AKF_OK;
    if (!variant_ok()) { *status = AKF_ERR_CPU; return NULL; }
    if (impl == AKF_IMPL_BEST) {
        for (int id = AKF_IMPL_COUNT; id >= 1; id--)
            if (ok & (1u << (id - 1))) return &IMPLS[id];
        *status = AKF_ERR_CPU;
        return NULL;
    }
    if (impl < 1 || impl > AKF_IMPL_COUNT) { *status = AKF_ERR_ARG; return NULL; }
    if (!IMPLS[impl].built) { *status = AKF_ERR_NOT_BUILT; return NULL; }
    if (!(ok & (1u << (impl - 1)))) { *status = AKF_ERR_CPU; return NULL; }
    return &IMPLS[impl];
}

int akf_impl_resolve(int impl) {
    int status;
    const struct impl *run = pick(impl, &status);
    return run ? (int)(run - IMPLS) : -status;
}

int akf_gemm_bf16(int impl, int M, int N, int K, const uint16_t *A, const uint16_t *Bp, float *C) {
    if (M < 0 || N < 0 || K < 0 || (!A && M && K) || (!Bp && K && N) || (!C && M && N)) return AKF_ERR_ARG;
    int status;
    const struct impl *run = pick(impl, &status);
    if (!run) return status;
    if (M == 0 || N == 0) return AKF_OK;
    if (K == 0) { memset(C, 0, sizeof *C * (size_t)M * N); return AKF_OK; }
    return run->gemm_bf16(M, N, K, A, Bp, C);
}

int akf_gemm_int8(int impl, int M, int N, int K, const int8_t *A, const float *as, const uint8_t *Bp, const float *bs,
                  float *C) {
    if (M < 0 || N < 0 || K < 0 || (!A && M && K) || (!Bp && N) || (!C && M && N) || (!as && M) || (!bs && N))
        return AKF_ERR_ARG;
    int status;
    const struct impl *run = pick(impl, &status);
    if (!run) return status;
    if (M == 0 || N == 0) return AKF_OK;
    if (K == 0) { memset(C, 0, sizeof *C * (size_t)M * N); return AKF_OK; }
    return run->gemm_int8(M, N, K, A, as, Bp, bs, C);
}

int akf_spmm_bf16(int impl, int M, const uint16_t *A, const akf_sparse *B, float *C) {
    if (M < 0 || !B || B->dtype != AKF_BF16 || (!A && M) || (!C && M)) return AKF_ERR_ARG;
    int status;
    const struct impl *run = pick(impl, &status);
    if (!run) return status;
    return M == 0 ? AKF_OK : run->spmm_bf16(M, A, B, C);
}

int akf_spmm_int8(int impl, int M, const int8_t *A, const float *as, const akf_sparse *B, const float *bs, float *C) {
    if (M < 0 || !B || B->dtype != AKF_INT8 || (!A && M) || (!C && M) || (!as && M) || !bs) return AKF_ERR_ARG;
    int status;
    const struct impl *run = pick(impl, &status);
    if (!run) return status;
    return M == 0 ? AKF_OK : run->spmm_int8(M, A, as, B, bs, C);
}

int akf_cvt_bf16(int impl, const float *in, uint16_t *out, size_t n) {
    if ((!in || !out) && n) return AKF_ERR_ARG;
    int status;
    const struct impl *run = pick(impl, &status);
    if (!run) return status;
    return n == 0 ? AKF_OK : run->cvt_bf16(in, out, n);
}
