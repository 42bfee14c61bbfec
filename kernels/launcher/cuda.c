/* akf_gpu_check, akf_gpu_describe (class `portable`): see akf_selector.h. The CUDA driver API through dlopen, so
 * that the selector has no link dependency on libcuda and still runs (and says why) where there is none. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "akf_selector.h"
#include "amxforge_kernels.h"

#define MAX_DEVICES 32
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define CUDA_ERROR_NO_DEVICE 100 /* cuda.h's CUresult */

static struct {
    int asked, usable, driver, count;
    int major[MAX_DEVICES], minor[MAX_DEVICES];
    char name[MAX_DEVICES][96];
    char why[256];
} cuda;

/* AMXFORGE_GUARD_CUDA="none" | "driver=N;devices=M.m,M.m" (tests: a simulated driver) */
static void fake(const char *spec) {
    if (!strcmp(spec, "none")) {
        snprintf(cuda.why, sizeof cuda.why, "libcuda.so.1 cannot be loaded (simulated by AMXFORGE_GUARD_CUDA)");
        return;
    }
    const char *d = strstr(spec, "driver="), *v = strstr(spec, "devices=");
    cuda.driver = d ? atoi(d + 7) : 0;
    char list[512];
    snprintf(list, sizeof list, "%s", v ? v + 8 : "");
    list[strcspn(list, ";")] = '\0';
    for (char *save = NULL, *cc = strtok_r(list, ",", &save); cc && cuda.count < MAX_DEVICES;
         cc = strtok_r(NULL, ",", &save)) {
        if (sscanf(cc, "%d.%d", &cuda.major[cuda.count], &cuda.minor[cuda.count]) != 2) continue;
        snprintf(cuda.name[cuda.count], sizeof cuda.name[0], "simulated device");
        cuda.count++;
    }
    cuda.usable = 1;
}

static void ask_driver(void) {
    if (cuda.asked) return;
    cuda.asked = 1;
    const char *spec = getenv("AMXFORGE_GUARD_CUDA");
    if (spec && *spec) { fake(spec); return; }
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(cuda.why, sizeof cuda.why, "no NVIDIA driver here (libcuda.so.1 cannot be loaded)");
        return;
    }
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(lib, "cuInit");
    int (*version)(int *) = (int (*)(int *))dlsym(lib, "cuDriverGetVersion");
    int (*count)(int *) = (int (*)(int *))dlsym(lib, "cuDeviceGetCount");
    int (*get)(int *, int) = (int (*)(int *, int))dlsym(lib, "cuDeviceGet");
    int (*attr)(int *, int, int) = (int (*)(int *, int, int))dlsym(lib, "cuDeviceGetAttribute");
    int (*name)(char *, int, int) = (int (*)(char *, int, int))dlsym(lib, "cuDeviceGetName");
    if (!init || !version || !count || !get || !attr) {
        snprintf(cuda.why, sizeof cuda.why, "libcuda.so.1 lacks the driver API (cuInit, cuDeviceGetAttribute)");
        return;
    }
    int rc = init(0);
    if (rc == CUDA_ERROR_NO_DEVICE) { /* seen on the AMX host with CUDA_VISIBLE_DEVICES= */
        const char *visible = getenv("CUDA_VISIBLE_DEVICES");
        snprintf(cuda.why, sizeof cuda.why, "the NVIDIA driver sees no device (cuInit error %d)%s%.64s%s", rc,
                 visible ? ", CUDA_VISIBLE_DEVICES=\"" : "", visible ? visible : "", visible ? "\" leaves none" : "");
        return;
    }
    if (rc != 0) {
        snprintf(cuda.why, sizeof cuda.why, "the NVIDIA driver does not start (cuInit error %d)", rc);
        return;
    }
    if (version(&cuda.driver) != 0) cuda.driver = 0;
    int n = 0;
    if (count(&n) != 0) n = 0;
    for (int i = 0; i < n && cuda.count < MAX_DEVICES; i++) {
        int dev, major = 0, minor = 0;
        if (get(&dev, i) != 0 || attr(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev) != 0 ||
            attr(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev) != 0)
            continue;
        cuda.major[cuda.count] = major;
        cuda.minor[cuda.count] = minor;
        if (!name || name(cuda.name[cuda.count], (int)sizeof cuda.name[0], dev) != 0)
            snprintf(cuda.name[cuda.count], sizeof cuda.name[0], "device %d", i);
        cuda.count++;
    }
    cuda.usable = 1; /* the library stays loaded: the chosen variant's program loads it again anyway */
}

/* "90" -> 9.0, "120a" -> 12.0 exact; returns 0 when the text is not an arch */
static int parse_arch(const char *text, int *major, int *minor, int *exact) {
    char *end;
    long digits = strtol(text, &end, 10);
    if (end == text || digits < 10) return 0;
    *major = (int)(digits / 10);
    *minor = (int)(digits % 10);
    *exact = *end == 'a';
    return 1;
}

static int sass_runs(const char *arch, int major, int minor) {
    int m, n, exact;
    if (!parse_arch(arch, &m, &n, &exact)) return 0;
    return exact ? (m == major && n == minor) : (m == major && minor >= n);
}

static int ptx_runs(const char *arch, int major, int minor) {
    int m, n, exact;
    if (!arch[0] || !parse_arch(arch, &m, &n, &exact)) return 0;
    return exact ? (m == major && n == minor) : (major > m || (major == m && minor >= n));
}

int akf_gpu_check(const char *variant, const struct akf_gpu_need *need, char *msg, size_t len) {
    ask_driver();
    if (!cuda.usable) {
        snprintf(msg, len, "variant %s needs an NVIDIA GPU: %s", variant, cuda.why);
        return AKF_ERR_CPU;
    }
    if (cuda.driver < need->driver) {
        snprintf(msg, len, "variant %s was built with CUDA %d.%d and needs a driver at least that new; this one is "
                 "%d.%d", variant, need->driver / 1000, need->driver % 1000 / 10, cuda.driver / 1000,
                 cuda.driver % 1000 / 10);
        return AKF_ERR_CPU;
    }
    if (cuda.count == 0) {
        snprintf(msg, len, "variant %s needs an NVIDIA GPU, and the driver lists none (CUDA_VISIBLE_DEVICES=%s)",
                 variant, getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "unset");
        return AKF_ERR_CPU;
    }
    char sass[256], seen[256] = "";
    for (int d = 0; d < cuda.count; d++) {
        snprintf(sass, sizeof sass, "%s", need->sass);
        for (char *save = NULL, *a = strtok_r(sass, ",", &save); a; a = strtok_r(NULL, ",", &save))
            if (sass_runs(a, cuda.major[d], cuda.minor[d])) return AKF_OK;
        if (ptx_runs(need->ptx, cuda.major[d], cuda.minor[d])) return AKF_OK;
        size_t used = strlen(seen);
        snprintf(seen + used, sizeof seen - used, "%s%d.%d", used ? ", " : "", cuda.major[d], cuda.minor[d]);
    }
    snprintf(msg, len, "variant %s has GPU code for %s (SASS)%s%s only; the devices here have compute capability %s",
             variant, need->sass, need->ptx[0] ? " and PTX for " : "", need->ptx, seen);
    return AKF_ERR_CPU;
}

void akf_gpu_describe(FILE *out, const char *prog) {
    ask_driver();
    if (!cuda.usable) {
        fprintf(out, "%s: CUDA: %s\n", prog, cuda.why);
        return;
    }
    fprintf(out, "%s: CUDA: driver %d.%d, %d device(s)", prog, cuda.driver / 1000, cuda.driver % 1000 / 10, cuda.count);
    for (int d = 0; d < cuda.count; d++) fprintf(out, "%s%d %s (%d.%d)", d ? ", " : ": ", d, cuda.name[d],
                                                 cuda.major[d], cuda.minor[d]);
    fputc('\n', out);
}
