/* Portable guard (class `portable`: built for plain x86-64, so it runs on ANY x86-64 CPU and can say why a
 * variant cannot run instead of dying with SIGILL). Checks CPUID, XCR0 and, for AMX, asks Linux for
 * permission (arch_prctl ARCH_REQ_XCOMP_PERM, Linux >= 5.16). */
#include <cpuid.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "amxforge_kernels.h"

#ifndef AKF_VARIANT
#define AKF_VARIANT "unknown"
#endif
#ifndef AKF_REQUIRED
#define AKF_REQUIRED ""
#endif

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define XCR0_AVX 0x6ull               /* SSE + AVX state */
#define XCR0_AVX512 0xE6ull           /* + opmask, ZMM_Hi256, Hi16_ZMM */
#define XCR0_TILE (3ull << 17)        /* XTILECFG + XTILEDATA */

enum reg { EAX, EBX, ECX, EDX };
enum state { ST_NONE, ST_AVX, ST_AVX512, ST_TILE };

struct feature { const char *name; unsigned leaf, subleaf; enum reg reg; unsigned bit; enum state state; };

/* Linux /proc/cpuinfo spellings -> CPUID bits (Intel SDM vol. 2A, CPUID). */
static const struct feature FEATURES[] = {
    {"sse", 1, 0, EDX, 25, ST_NONE},          {"sse2", 1, 0, EDX, 26, ST_NONE},
    {"pni", 1, 0, ECX, 0, ST_NONE},           {"ssse3", 1, 0, ECX, 9, ST_NONE},
    {"fma", 1, 0, ECX, 12, ST_AVX},           {"cx16", 1, 0, ECX, 13, ST_NONE},
    {"sse4_1", 1, 0, ECX, 19, ST_NONE},       {"sse4_2", 1, 0, ECX, 20, ST_NONE},
    {"movbe", 1, 0, ECX, 22, ST_NONE},        {"popcnt", 1, 0, ECX, 23, ST_NONE},
    {"xsave", 1, 0, ECX, 26, ST_NONE},        {"avx", 1, 0, ECX, 28, ST_AVX},
    {"f16c", 1, 0, ECX, 29, ST_AVX},          {"abm", 0x80000001u, 0, ECX, 5, ST_NONE},
    {"bmi1", 7, 0, EBX, 3, ST_NONE},          {"avx2", 7, 0, EBX, 5, ST_AVX},
    {"bmi2", 7, 0, EBX, 8, ST_NONE},          {"avx512f", 7, 0, EBX, 16, ST_AVX512},
    {"avx512dq", 7, 0, EBX, 17, ST_AVX512},   {"avx512ifma", 7, 0, EBX, 21, ST_AVX512},
    {"avx512cd", 7, 0, EBX, 28, ST_AVX512},   {"avx512bw", 7, 0, EBX, 30, ST_AVX512},
    {"avx512vl", 7, 0, EBX, 31, ST_AVX512},   {"avx512vbmi", 7, 0, ECX, 1, ST_AVX512},
    {"avx512_vbmi2", 7, 0, ECX, 6, ST_AVX512}, {"gfni", 7, 0, ECX, 8, ST_NONE},
    {"vaes", 7, 0, ECX, 9, ST_AVX},           {"vpclmulqdq", 7, 0, ECX, 10, ST_AVX},
    {"avx512_vnni", 7, 0, ECX, 11, ST_AVX512}, {"avx512_bitalg", 7, 0, ECX, 12, ST_AVX512},
    {"avx512_vpopcntdq", 7, 0, ECX, 14, ST_AVX512},
    {"amx_bf16", 7, 0, EDX, 22, ST_TILE},     {"avx512_fp16", 7, 0, EDX, 23, ST_AVX512},
    {"amx_tile", 7, 0, EDX, 24, ST_TILE},     {"amx_int8", 7, 0, EDX, 25, ST_TILE},
    {"avx_vnni", 7, 1, EAX, 4, ST_AVX},       {"avx512_bf16", 7, 1, EAX, 5, ST_AVX512},
    {"amx_fp16", 7, 1, EAX, 21, ST_TILE},
};
#define N_FEATURES (sizeof(FEATURES) / sizeof(FEATURES[0]))

const char *akf_variant(void) { return AKF_VARIANT; }
const char *akf_required_features(void) { return AKF_REQUIRED; }

/* Is `word` one of the space-separated names in `list`? */
static int listed(const char *list, const char *word) {
    size_t n = strlen(word);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',') p++;
        const char *end = p;
        while (*end && *end != ' ' && *end != ',') end++;
        if ((size_t)(end - p) == n && strncmp(p, word, n) == 0) return 1;
        p = end;
    }
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

static void append(char *buf, size_t len, const char *word) {
    size_t used = strlen(buf);
    if (used + strlen(word) + 2 < len) {
        if (used) strcat(buf, " ");
        strcat(buf, word);
    }
}

int akf_guard_features(const char *required, char *msg, size_t len) {
    char missing[512] = "";
    enum state need = ST_NONE;
    for (size_t i = 0; i < N_FEATURES; i++) {
        const struct feature *f = &FEATURES[i];
        if (!listed(required, f->name)) continue;
        if (f->state > need) need = f->state;
        if (hidden(f->name) || !cpu_has(f)) append(missing, sizeof missing, f->name);
    }
    if (missing[0]) {
        snprintf(msg, len, "this CPU lacks %s (variant %s needs: %s)", missing, AKF_VARIANT, required);
        return AKF_ERR_CPU;
    }
    unsigned long long x = need > ST_NONE ? xcr0() : 0;
    unsigned long long want = need == ST_AVX ? XCR0_AVX : need >= ST_AVX512 ? XCR0_AVX512 : 0;
    if ((x & want) != want) {
        snprintf(msg, len, "the OS has not enabled the %s register state (XCR0=0x%llx); a VM may hide it",
                 need == ST_AVX ? "AVX" : "AVX-512", x);
        return AKF_ERR_OS;
    }
    if (need == ST_TILE) {
        if ((x & XCR0_TILE) != XCR0_TILE || hidden("xcr0_tile")) {
            snprintf(msg, len, "the OS has not enabled the AMX tile state (XCR0=0x%llx); Linux >= 5.16 is needed", x);
            return AKF_ERR_OS;
        }
        long rc = hidden("amx_permission") ? (errno = EPERM, -1)
                                           : syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
        if (rc != 0) {
            snprintf(msg, len, "Linux refused AMX permission: arch_prctl(ARCH_REQ_XCOMP_PERM) failed: %s",
                     strerror(errno));
            return AKF_ERR_PERMISSION;
        }
    }
    if (len) msg[0] = '\0';
    return AKF_OK;
}

int akf_guard(char *msg, size_t len) { return akf_guard_features(AKF_REQUIRED, msg, len); }
