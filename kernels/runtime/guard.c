/* Portable guard (class `portable`: built for plain x86-64, so it runs on ANY x86-64 CPU and can say why a
 * variant cannot run instead of dying with SIGILL). Checks CPUID, XCR0 and, where a state needs it, asks Linux
 * for permission (arch_prctl ARCH_REQ_XCOMP_PERM for AMX, Linux >= 5.16). The bits come from toolchain/isa.toml
 * (akf_cpuid.h). Knows no variant: the kernel library's dispatch asks it about its own variant, the launcher about
 * each variant of its table. */
#include <cpuid.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "amxforge_kernels.h"
#include "akf_cpuid.h"

#define ARCH_REQ_XCOMP_PERM 0x1023

enum reg { EAX, EBX, ECX, EDX };
enum state {
#define STATE_ENUM(name, xcr0, label, permission) ST_##name,
    AKF_XSAVE_STATES(STATE_ENUM)
#undef STATE_ENUM
    N_STATES
};
static const struct { const char *name; unsigned long long xcr0; const char *label; int permission; } STATES[] = {
#define STATE_ROW(name, xcr0, label, permission) {#name, xcr0, label, permission},
    AKF_XSAVE_STATES(STATE_ROW)
#undef STATE_ROW
};

struct feature { const char *name; unsigned leaf, subleaf; enum reg reg; unsigned bit; enum state state; };
static const struct feature FEATURES[] = {
#define FEATURE_ROW(name, leaf, subleaf, reg, bit, state) {name, leaf, subleaf, reg, bit, ST_##state},
    AKF_CPUID_FEATURES(FEATURE_ROW)
#undef FEATURE_ROW
};
#define N_FEATURES (sizeof(FEATURES) / sizeof(FEATURES[0]))

/* The next space- or comma-separated word of *p (NULL at the end); its length in *n. */
static const char *next_word(const char **p, size_t *n) {
    const char *s = *p;
    while (*s == ' ' || *s == ',') s++;
    if (!*s) return NULL;
    const char *end = s;
    while (*end && *end != ' ' && *end != ',') end++;
    *n = (size_t)(end - s);
    *p = end;
    return s;
}

/* Is `word` one of the names in `list`? */
static int listed(const char *list, const char *word) {
    size_t n, len = strlen(word);
    for (const char *p = list ? list : "", *w; (w = next_word(&p, &n));)
        if (n == len && strncmp(w, word, n) == 0) return 1;
    return 0;
}

static int hidden(const char *name) { return listed(getenv("AMXFORGE_GUARD_HIDE"), name); }

static int cpu_has(const struct feature *f) {
    unsigned r[4] = {0, 0, 0, 0};
    if ((unsigned)__get_cpuid_max(f->leaf & 0x80000000u, 0) < f->leaf) return 0;
    __cpuid_count(f->leaf, f->subleaf, r[EAX], r[EBX], r[ECX], r[EDX]);
    return (r[f->reg] >> f->bit) & 1u;
}

static unsigned long long xcr0(void) {
    unsigned a, b, c, d;
    __cpuid(1, a, b, c, d);
    if (!((c >> 27) & 1u)) return 0; /* no OSXSAVE: the OS manages no extended state */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void append(char *buf, size_t len, const char *word, size_t n) {
    size_t used = strlen(buf);
    if (used + n + 2 < len) {
        if (used) strcat(buf, " ");
        strncat(buf, word, n);
    }
}

int akf_check_features(const char *variant, const char *required, char *msg, size_t len) {
    char missing[512] = "", unknown[256] = "";
    int need[N_STATES] = {0};
    size_t n;
    for (const char *p = required ? required : "", *w; (w = next_word(&p, &n));) {
        const struct feature *f = NULL;
        for (size_t i = 0; i < N_FEATURES && !f; i++)
            if (strlen(FEATURES[i].name) == n && strncmp(FEATURES[i].name, w, n) == 0) f = &FEATURES[i];
        if (!f) { append(unknown, sizeof unknown, w, n); continue; }
        need[f->state] = 1;
        if (hidden(f->name) || !cpu_has(f)) append(missing, sizeof missing, w, n);
    }
    if (unknown[0]) {
        snprintf(msg, len, "variant %s needs %s, which this guard cannot check (add it to toolchain/isa.toml [cpuid])",
                 variant, unknown);
        return AKF_ERR_CPU;
    }
    if (missing[0]) {
        snprintf(msg, len, "this CPU lacks %s (variant %s needs: %s)", missing, variant, required);
        return AKF_ERR_CPU;
    }
    const unsigned long long x = xcr0();
    for (int s = 0; s < N_STATES; s++) {
        char hide[64];
        snprintf(hide, sizeof hide, "xcr0_%s", STATES[s].name);
        if (!need[s] || ((x & STATES[s].xcr0) == STATES[s].xcr0 && !hidden(hide))) continue;
        snprintf(msg, len, "the OS has not enabled the %s register state (XCR0=0x%llx, needs 0x%llx); a VM may hide "
                 "it, and AMX needs Linux >= 5.16", STATES[s].label, x, STATES[s].xcr0);
        return AKF_ERR_OS;
    }
    for (int s = 0; s < N_STATES; s++) {
        if (!need[s] || !STATES[s].permission) continue;
        long rc = hidden("amx_permission") ? (errno = EPERM, -1)
                                           : syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, STATES[s].permission);
        if (rc != 0) {
            snprintf(msg, len, "Linux refused AMX permission: arch_prctl(ARCH_REQ_XCOMP_PERM) failed: %s",
                     strerror(errno));
            return AKF_ERR_PERMISSION;
        }
    }
    if (len) msg[0] = '\0';
    return AKF_OK;
}
