/* amxforge-selftest (class `portable`): runs on any x86-64 CPU. It asks the guard first, so a variant binary on
 * a host without its features prints why and exits 2 instead of dying with SIGILL; then it checks every
 * implementation this variant compiled and this host runs (the table's rows, toolchain/kernels.toml) against the
 * reference, on all four operations (bf16 / int8, dense / sparse), and prints one JSON line. Exit 1 if any differs. */
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

static unsigned seed = 12345;
static float rnd(void) { return (float)((seed = seed * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f; }

enum { M = 37, N = 45, K = 77 };

struct operands {
    uint16_t A[M * K], B[K * N], *Bp;
    int8_t A8[M * K], B8[K * N];
    uint8_t *Bp8;
    float as[M], bs[N];
    akf_sparse *S, *S8;
};

/* Run all four operations with implementation `impl` into out[4][M * N]. Returns the first non-OK status. */
static int run_all(int impl, const struct operands *o, float *out[4]) {
    int rc = akf_gemm_bf16(impl, M, N, K, o->A, o->Bp, out[0]);
    if (!rc) rc = akf_gemm_int8(impl, M, N, K, o->A8, o->as, o->Bp8, o->bs, out[1]);
    if (!rc) rc = akf_spmm_bf16(impl, M, o->A, o->S, out[2]);
    if (!rc) rc = akf_spmm_int8(impl, M, o->A8, o->as, o->S8, o->bs, out[3]);
    return rc;
}

int main(int argc, char **argv) {
    char msg[512];
    if (argc > 1) { /* it takes no options: --help says what it does, anything else is refused, never ignored */
        const int help = argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
        fprintf(help ? stdout : stderr, "usage: amxforge-selftest   (no options) checks every implementation this "
                                        "variant built and this host runs against the reference; one JSON line, exit "
                                        "0 ok, 1 a difference, 2 cannot run here\n");
        if (!help) fprintf(stderr, "amxforge-selftest: %s: it takes no options; run it without any\n", argv[1]);
        return help ? 0 : 2;
    }
    int status = akf_guard(msg, sizeof msg);
    if (status != AKF_OK) {
        fprintf(stderr, "amxforge-selftest: variant %s cannot run on this host: %s\n", akf_variant(), msg);
        return AKF_EXIT_UNSUPPORTED;
    }
    static struct operands o;
    for (int i = 0; i < M * K; i++) { o.A[i] = f32_to_bf16(rnd()); o.A8[i] = (int8_t)(rnd() * 127.0f); }
    for (int i = 0; i < K * N; i++) {
        const int zero = rnd() < 0.0f; /* about half the weights are zero: the sparse paths see real masks */
        o.B[i] = zero ? 0 : f32_to_bf16(rnd());
        o.B8[i] = zero ? 0 : (int8_t)(rnd() * 127.0f);
    }
    for (int i = 0; i < M; i++) o.as[i] = 0.01f + 0.001f * (float)i;
    for (int i = 0; i < N; i++) o.bs[i] = 0.02f + 0.001f * (float)i;
    o.Bp = akf_alloc(sizeof(uint16_t) * akf_bf16_packed_elems(K, N));
    o.Bp8 = akf_alloc(akf_int8_packed_bytes(K, N));
    akf_bf16_pack_b(K, N, o.B, o.Bp);
    akf_int8_pack_b(K, N, o.B8, o.Bp8);
    o.S = akf_sparse_pack(AKF_BF16, K, N, o.B, msg, sizeof msg);
    o.S8 = akf_sparse_pack(AKF_INT8, K, N, o.B8, msg, sizeof msg);
    float *ref[4], *out[4];
    for (int i = 0; i < 4; i++) { ref[i] = malloc(sizeof(float) * M * N); out[i] = malloc(sizeof(float) * M * N); }
    const int ref_id = akf_impl_find("ref");
    if (!o.S || !o.S8 || run_all(ref_id, &o, ref) != AKF_OK) {
        fprintf(stderr, "amxforge-selftest: the reference implementation failed\n");
        return 1;
    }
    static const char *ops[4] = {"gemm_bf16", "gemm_int8", "spmm_bf16", "spmm_int8"};
    int failed = 0, first = 1;
    const unsigned runnable = akf_runnable_impls();
    printf("{\"variant\": \"%s\", \"compiled\": %u, \"runnable\": %u, \"checks\": {", akf_variant(), akf_compiled_impls(),
           runnable);
    for (int id = 1; id <= akf_impl_count(); id++) {
        if (id == ref_id || !(runnable & (1u << (id - 1)))) continue;
        for (int i = 0; i < 4; i++) memset(out[i], 0, sizeof(float) * M * N);
        const int rc = run_all(id, &o, out);
        printf("%s\"%s\": {", first ? "" : ", ", akf_impl_name(id));
        int ok = rc == AKF_OK;
        for (int i = 0; i < 4; i++) {
            double worst = 0.0;
            for (int j = 0; j < M * N; j++) {
                const double err = fabs((double)out[i][j] - ref[i][j]) / (1.0 + fabs(ref[i][j]));
                if (err > worst) worst = err;
            }
            /* bf16: fp32 accumulation against the double reference; int8: exact */
            ok &= worst < (i % 2 ? 1e-12 : 1e-4);
            printf("\"%s\": %.3g, ", ops[i], worst);
        }
        printf("\"ok\": %s}", ok ? "true" : "false");
        failed |= !ok;
        first = 0;
    }
    printf("}}\n");
    for (int i = 0; i < 4; i++) { free(ref[i]); free(out[i]); }
    akf_free(o.Bp); akf_free(o.Bp8); akf_sparse_free(o.S); akf_sparse_free(o.S8);
    return failed;
}
