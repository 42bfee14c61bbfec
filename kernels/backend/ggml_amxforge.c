/* libggml-amxforge.so: our kernels as a dynamic ggml backend (class `portable`: plain C; the kernels go through
 * dispatch and its guard), compiled against a ggml tree's own headers (ggml.h, ggml-backend.h and the backend
 * interface in ggml-backend-impl.h) and loaded by ggml's loader (ggml_backend_load, GGML_BACKEND_PATH). It names
 * only fields and functions of that interface, so it builds against any tree that declares them.
 *
 * One device, "AMXFORGE", of type ACCEL: it works beside the CPU backend, which keeps every op it declines. It takes
 * MUL_MAT with bf16 weights and f32 activations (rows contiguous; batched and broadcast 3-d/4-d products slice by
 * slice) through the matmul handler (kernels/hook/mulmat.c): the best implementation this host runs, weights packed
 * once per tensor at first use (densely, or sparse for pruned weights), the fork's threads replaced by this
 * backend's team (ggml_backend_set_n_threads). Its buffer type is host memory holding plain tensors (any type; what
 * ggml's test-backend-ops needs), on 2 MB pages; writing a tensor (set_tensor, memset, clear) or freeing the buffer
 * releases the packed form of the weights it held, packed anew at next use. The score is 0 where the variant's
 * guard refuses this host (CPU features, XCR0, AMX permission): ggml's loader then skips the library. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "ggml.h"
#include "ggml-backend.h"
#include "ggml-backend-impl.h"

#include "akf_internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define NAME "AMXFORGE"

/* ---- buffers: host memory, plain tensors --------------------------------------------------------------- */
static void buffer_free(ggml_backend_buffer_t buffer) {
    akf_hook_changed(buffer->context, buffer->size);
    akf_free(buffer->context);
}

static void *buffer_base(ggml_backend_buffer_t buffer) { return buffer->context; }

static void buffer_memset_tensor(ggml_backend_buffer_t buffer, struct ggml_tensor *tensor, uint8_t value,
                                 size_t offset, size_t size) {
    (void)buffer;
    memset((char *)tensor->data + offset, value, size);
    akf_hook_changed((char *)tensor->data + offset, size);
}

static void buffer_set_tensor(ggml_backend_buffer_t buffer, struct ggml_tensor *tensor, const void *data,
                              size_t offset, size_t size) {
    (void)buffer;
    memcpy((char *)tensor->data + offset, data, size);
    akf_hook_changed((char *)tensor->data + offset, size);
}

static void buffer_get_tensor(ggml_backend_buffer_t buffer, const struct ggml_tensor *tensor, void *data,
                              size_t offset, size_t size) {
    (void)buffer;
    memcpy(data, (const char *)tensor->data + offset, size);
}

static bool buffer_cpy_tensor(ggml_backend_buffer_t buffer, const struct ggml_tensor *src, struct ggml_tensor *dst) {
    (void)buffer;
    if (!src->buffer || !ggml_backend_buft_is_host(src->buffer->buft)) return false;
    memcpy(dst->data, src->data, ggml_nbytes(src));
    akf_hook_changed(dst->data, ggml_nbytes(src));
    return true;
}

static void buffer_clear(ggml_backend_buffer_t buffer, uint8_t value) {
    memset(buffer->context, value, buffer->size);
    akf_hook_changed(buffer->context, buffer->size);
}

static const struct ggml_backend_buffer_i buffer_iface = {
    .free_buffer = buffer_free,
    .get_base = buffer_base,
    .memset_tensor = buffer_memset_tensor,
    .set_tensor = buffer_set_tensor,
    .get_tensor = buffer_get_tensor,
    .cpy_tensor = buffer_cpy_tensor,
    .clear = buffer_clear,
};

static const char *buft_name(ggml_backend_buffer_type_t buft) {
    (void)buft;
    return NAME;
}

static ggml_backend_buffer_t buft_alloc(ggml_backend_buffer_type_t buft, size_t size) {
    void *data = akf_alloc(size ? size : 64); /* 64-byte aligned; 2 MB pages from 4 MB */
    if (!data) {
        fprintf(stderr, "amxforge backend: cannot allocate a buffer of %zu bytes\n", size);
        return NULL;
    }
    return ggml_backend_buffer_init(buft, buffer_iface, data, size);
}

static size_t buft_alignment(ggml_backend_buffer_type_t buft) {
    (void)buft;
    return 64;
}

static bool buft_is_host(ggml_backend_buffer_type_t buft) {
    (void)buft;
    return true;
}

static struct ggml_backend_device device;
static struct ggml_backend_buffer_type buffer_type = {
    .iface = {.get_name = buft_name, .alloc_buffer = buft_alloc, .get_alignment = buft_alignment,
              .is_host = buft_is_host},
    .device = &device,
};

/* ---- the backend: the MUL_MATs it took, one team of threads per graph ---------------------------------- */
struct context {
    int threads;
    uint16_t *rounded; /* the activations of the slice under way, rounded to bf16 once for the team */
    size_t rounded_bytes;
};

static int takes(const struct ggml_tensor *op) {
    const struct ggml_tensor *w = op->src[0], *x = op->src[1];
    return op->op == GGML_OP_MUL_MAT && w && x && w->type == GGML_TYPE_BF16 && x->type == GGML_TYPE_F32 &&
           op->type == GGML_TYPE_F32 && w->nb[0] == 2 && x->nb[0] == 4 && op->nb[0] == 4 &&
           w->ne[0] == x->ne[0] && op->ne[0] == w->ne[1] && op->ne[1] == x->ne[1] && w->ne[2] > 0 && w->ne[3] > 0 &&
           x->ne[2] % w->ne[2] == 0 && x->ne[3] % w->ne[3] == 0 && op->nb[1] % 4 == 0 && x->nb[1] % 4 == 0 &&
           w->nb[1] % 2 == 0 && w->nb[1] >= 2 * (size_t)w->ne[0] && x->nb[1] >= 4 * (size_t)x->ne[0] &&
           op->nb[1] >= 4 * (size_t)op->ne[0];
}

/* thread ith of nth: its share of one 2-d slice (xq: its activations, M rows of K bf16), through the handler, or
 * (should the handler decline: a tensor too large to pack) the same share in plain C */
static void slice(const struct ggml_tensor *op, const char *w, const uint16_t *xq, char *y, int ith, int nth) {
    const struct ggml_tensor *W = op->src[0], *X = op->src[1];
    const long N = W->ne[1], K = W->ne[0], M = X->ne[1];
    if (akf_hook_mul_mat_4d(N, M, K, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, GGML_TYPE_BF16, w, (long)W->nb[1],
                            GGML_TYPE_BF16, xq, K * 2, (float *)y, (long)(op->nb[1] / 4), ith, nth))
        return;
    for (long n = N * ith / nth; n < N * (ith + 1) / nth; n++) {
        const uint16_t *wr = (const uint16_t *)(w + (size_t)n * W->nb[1]);
        for (long m = 0; m < M; m++) {
            const uint16_t *xr = xq + (size_t)m * (size_t)K;
            double sum = 0;
            for (long k = 0; k < K; k++) sum += (double)akf_bf16_to_f32(wr[k]) * akf_bf16_to_f32(xr[k]);
            ((float *)(y + (size_t)m * op->nb[1]))[n] = (float)sum;
        }
    }
}

/* Every thread of the team: per 2-d slice, its rows of the activations rounded to bf16 (once for the team, not by
 * every thread), then its share of the product. xq holds one slice's activations. */
static void mul_mat(const struct ggml_tensor *op, uint16_t *xq, int ith, int nth) {
    const struct ggml_tensor *W = op->src[0], *X = op->src[1];
    const long r2 = X->ne[2] / W->ne[2], r3 = X->ne[3] / W->ne[3], K = X->ne[0];
    for (long i3 = 0; i3 < op->ne[3]; i3++)
        for (long i2 = 0; i2 < op->ne[2]; i2++) {
            const char *x = (const char *)X->data + (size_t)i2 * X->nb[2] + (size_t)i3 * X->nb[3];
            for (long m = ith; m < X->ne[1]; m += nth) {
                const float *row = (const float *)(x + (size_t)m * X->nb[1]);
                uint16_t *out = xq + (size_t)m * (size_t)K;
                if (akf_cvt_bf16(AKF_IMPL_BEST, row, out, (size_t)K) != AKF_OK)
                    for (long k = 0; k < K; k++) out[k] = akf_bf16_round(row[k]);
            }
#pragma omp barrier
            slice(op, (const char *)W->data + (size_t)(i2 / r2) * W->nb[2] + (size_t)(i3 / r3) * W->nb[3], xq,
                  (char *)op->data + (size_t)i2 * op->nb[2] + (size_t)i3 * op->nb[3], ith, nth);
#pragma omp barrier
        }
}

static int layout_only(enum ggml_op op) {
    return op == GGML_OP_NONE || op == GGML_OP_RESHAPE || op == GGML_OP_VIEW || op == GGML_OP_PERMUTE ||
           op == GGML_OP_TRANSPOSE;
}

static enum ggml_status graph_compute(ggml_backend_t backend, struct ggml_cgraph *graph) {
    struct context *ctx = backend->context;
    const int n = ggml_graph_n_nodes(graph);
    for (int i = 0; i < n; i++) {
        const struct ggml_tensor *op = ggml_graph_node(graph, i);
        if (!layout_only(op->op) && !takes(op)) {
            fprintf(stderr, "amxforge backend: %s is not an op it takes (supports_op said so)\n", ggml_op_name(op->op));
            return GGML_STATUS_FAILED;
        }
    }
    for (int i = 0; i < n; i++) {
        const struct ggml_tensor *op = ggml_graph_node(graph, i);
        if (layout_only(op->op) || ggml_nelements(op) == 0) continue;
        const size_t bytes = (size_t)op->src[1]->ne[0] * (size_t)op->src[1]->ne[1] * 2;
        if (bytes > ctx->rounded_bytes) {
            akf_free(ctx->rounded);
            ctx->rounded_bytes = 0;
            if (!(ctx->rounded = akf_alloc(bytes))) {
                fprintf(stderr, "amxforge backend: no memory for %zu bytes of activations\n", bytes);
                return GGML_STATUS_ALLOC_FAILED;
            }
            ctx->rounded_bytes = bytes;
        }
        uint16_t *xq = ctx->rounded;
#pragma omp parallel num_threads(ctx->threads)
        {
            int ith = 0, nth = 1;
#ifdef _OPENMP
            ith = omp_get_thread_num();
            nth = omp_get_num_threads();
#endif
            mul_mat(op, xq, ith, nth);
        }
    }
    return GGML_STATUS_SUCCESS;
}

static const char *backend_name(ggml_backend_t backend) {
    (void)backend;
    return NAME;
}

static void backend_free(ggml_backend_t backend) {
    akf_free(((struct context *)backend->context)->rounded);
    free(backend->context);
    free(backend);
}

static ggml_guid guid = {0x61, 0x6d, 0x78, 0x66, 0x6f, 0x72, 0x67, 0x65, 0x2d, 0x6b, 0x65, 0x72, 0x6e, 0x65, 0x6c, 0x73};

static void set_threads(ggml_backend_t backend, int threads) {
    if (backend && backend->iface.get_name == backend_name && threads > 0)
        ((struct context *)backend->context)->threads = threads;
}

/* ---- the device ---------------------------------------------------------------------------------------------- */
static const char *dev_name(ggml_backend_dev_t dev) {
    (void)dev;
    return NAME;
}

static const char *dev_description(ggml_backend_dev_t dev) {
    (void)dev;
    static char text[160];
    if (!text[0]) {
        const char *impl = akf_impl_name(akf_impl_resolve(AKF_IMPL_BEST));
        snprintf(text, sizeof text, "amxforge kernels: bf16 MUL_MAT, implementation %s (variant %s)",
                 impl ? impl : "none", akf_variant());
    }
    return text;
}

static void dev_memory(ggml_backend_dev_t dev, size_t *free_bytes, size_t *total) {
    (void)dev;
    struct sysinfo si;
    *free_bytes = *total = 0;
    if (sysinfo(&si) == 0) {
        *free_bytes = (size_t)si.freeram * si.mem_unit;
        *total = (size_t)si.totalram * si.mem_unit;
    }
}

static enum ggml_backend_dev_type dev_type(ggml_backend_dev_t dev) {
    (void)dev;
    return GGML_BACKEND_DEVICE_TYPE_ACCEL;
}

static void dev_props(ggml_backend_dev_t dev, struct ggml_backend_dev_props *props) {
    memset(props, 0, sizeof *props);
    props->name = dev_name(dev);
    props->description = dev_description(dev);
    props->type = dev_type(dev);
    dev_memory(dev, &props->memory_free, &props->memory_total);
}

static ggml_backend_t dev_init(ggml_backend_dev_t dev, const char *params) {
    (void)params;
    ggml_backend_t backend = calloc(1, sizeof *backend);
    struct context *ctx = calloc(1, sizeof *ctx);
    if (!backend || !ctx) {
        free(backend);
        free(ctx);
        return NULL;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    ctx->threads = cpus > 0 ? (int)cpus : 1;
    backend->guid = &guid;
    backend->iface.get_name = backend_name;
    backend->iface.free = backend_free;
    backend->iface.graph_compute = graph_compute;
    backend->device = dev;
    backend->context = ctx;
    return backend;
}

static ggml_backend_buffer_type_t dev_buffer_type(ggml_backend_dev_t dev) {
    (void)dev;
    return &buffer_type;
}

/* MUL_MAT whose weights are in our buffers (or not placed yet: a loader asking which buffer type to put them in),
 * and the ops that only describe a layout */
static bool dev_supports_op(ggml_backend_dev_t dev, const struct ggml_tensor *op) {
    (void)dev;
    if (layout_only(op->op)) return true;
    const struct ggml_tensor *w = op->src[0];
    return takes(op) && (!w->buffer || w->buffer->buft == &buffer_type);
}

static bool dev_supports_buft(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft) {
    (void)dev;
    return buft == &buffer_type || ggml_backend_buft_is_host(buft); /* activations in host memory: no copy */
}

static struct ggml_backend_device device = {
    .iface = {.get_name = dev_name, .get_description = dev_description, .get_memory = dev_memory,
              .get_type = dev_type, .get_props = dev_props, .init_backend = dev_init,
              .get_buffer_type = dev_buffer_type, .supports_op = dev_supports_op, .supports_buft = dev_supports_buft},
};

/* ---- the registry ------------------------------------------------------------------------------------------ */
static const char *reg_name(ggml_backend_reg_t reg) {
    (void)reg;
    return NAME;
}

static size_t reg_count(ggml_backend_reg_t reg) {
    (void)reg;
    return 1;
}

static ggml_backend_dev_t reg_device(ggml_backend_reg_t reg, size_t index) {
    (void)reg;
    return index == 0 ? &device : NULL;
}

static void *reg_proc(ggml_backend_reg_t reg, const char *name) {
    (void)reg;
    return strcmp(name, "ggml_backend_set_n_threads") == 0 ? (void *)set_threads : NULL;
}

static struct ggml_backend_reg reg = {
    .api_version = GGML_BACKEND_API_VERSION,
    .iface = {.get_name = reg_name, .get_device_count = reg_count, .get_device = reg_device,
              .get_proc_address = reg_proc},
};

static ggml_backend_reg_t amxforge_reg(void) {
    device.reg = &reg;
    return &reg;
}

/* 0 where this build cannot run here (ggml's loader then skips it), else higher for a better implementation */
static int amxforge_score(void) {
    char msg[512];
    if (akf_guard(msg, sizeof msg) != AKF_OK) return 0;
    const int best = akf_impl_resolve(AKF_IMPL_BEST);
    return best > 0 ? best : 0;
}

GGML_BACKEND_DL_IMPL(amxforge_reg)
GGML_BACKEND_DL_SCORE_IMPL(amxforge_score)
