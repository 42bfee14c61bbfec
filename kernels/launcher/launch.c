/* amxforge-launch (class `portable`: plain x86-64, so it runs on ANY x86-64 CPU): the guard in front of every
 * binary amxforge installs. bin/<target> is a copy of this program; the real binary is <dir>/libexec/<target> of
 * a variant listed in the launch table, share/amxforge/launch.tsv, beside bin/ (one variant for a build, all of them
 * for a package, best first). It checks each variant's CPU features (CPUID), the register state the OS enabled
 * (XCR0) and, for AMX, Linux's permission (arch_prctl), runs the first variant that can run here, and otherwise
 * prints why and exits 2: never SIGILL.
 *
 *   AMXFORGE_VARIANT=NAME   run that variant or say why it cannot (exit 2)
 *   AMXFORGE_EXPLAIN=1      print on stderr each variant's verdict and the choice
 *   AMXFORGE_GUARD_HIDE     make the guard treat features (and xcr0_<state>, amx_permission) as absent (tests)
 *
 * Table (written by amxforge, tab-separated): a first line "amxforge-launch<TAB>1", then per variant
 * "variant<TAB>NAME<TAB>DIR<TAB>FEATURES", DIR relative to the table's root (the parent of bin/). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "amxforge_kernels.h"

#define TABLE_PATH "share/amxforge/launch.tsv"
#define MAX_VARIANTS 16

struct variant { char name[64], dir[256], features[1024]; };

static const char *prog = "amxforge-launch";

static void fail(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    exit(AKF_EXIT_UNSUPPORTED);
}

/* Copy field `i` (0-based, tab-separated) of line into out; 0 if missing or too long. */
static int field(const char *line, int i, char *out, size_t len) {
    const char *p = line;
    for (int f = 0; f < i; f++) {
        p = strchr(p, '\t');
        if (!p) return 0;
        p++;
    }
    size_t n = strcspn(p, "\t\n");
    if (n >= len) return 0;
    memcpy(out, p, n);
    out[n] = '\0';
    return 1;
}

static int load_table(const char *path, struct variant *v, char *why, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f) { snprintf(why, len, "cannot read %s: %s", path, strerror(errno)); return -1; }
    char line[2048], tag[32];
    int n = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) { snprintf(why, len, "%s:%d: line too long", path, lineno); n = -1; break; }
        if (lineno == 1) {
            if (!field(line, 0, tag, sizeof tag) || strcmp(tag, "amxforge-launch") || !field(line, 1, tag, sizeof tag) ||
                strcmp(tag, "1")) {
                snprintf(why, len, "%s: not an amxforge launch table (version 1)", path);
                n = -1;
                break;
            }
            continue;
        }
        if (line[0] == '\n' || line[0] == '#') continue;
        if (n == MAX_VARIANTS || !field(line, 0, tag, sizeof tag) || strcmp(tag, "variant") ||
            !field(line, 1, v[n].name, sizeof v[n].name) || !v[n].name[0] || !field(line, 2, v[n].dir, sizeof v[n].dir) ||
            !field(line, 3, v[n].features, sizeof v[n].features)) {
            snprintf(why, len, "%s:%d: damaged (want variant<TAB>NAME<TAB>DIR<TAB>FEATURES)", path, lineno);
            n = -1;
            break;
        }
        n++;
    }
    fclose(f);
    if (n == 0) snprintf(why, len, lineno ? "%s: lists no variant" : "%s: empty: not an amxforge launch table", path);
    return n > 0 ? n : -1;
}

static int explain(void) {
    const char *e = getenv("AMXFORGE_EXPLAIN");
    return e && *e && strcmp(e, "0") != 0;
}

int main(int argc, char **argv) {
    (void)argc;
    char self[PATH_MAX], root[PATH_MAX], table[PATH_MAX + 32], why[PATH_MAX + 1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) fail("cannot find its own path (/proc/self/exe: %s)%s", strerror(errno), "");
    self[n] = '\0';
    const char *slash = strrchr(self, '/');
    const char *target = slash ? slash + 1 : self;
    prog = target;
    if (!strcmp(target, "amxforge-launch"))
        fail("this program runs as bin/TARGET (a copy named after the binary it guards), not by its own name%s%s", "",
             "");
    /* root = the parent of the directory holding this program */
    snprintf(root, sizeof root, "%s", self);
    for (int up = 0; up < 2; up++) {
        char *cut = strrchr(root, '/');
        if (!cut) fail("cannot place itself: %s is not inside DIR/bin/%s", self, "");
        *cut = '\0';
    }
    snprintf(table, sizeof table, "%s/" TABLE_PATH, root);
    struct variant v[MAX_VARIANTS];
    int count = load_table(table, v, why, sizeof why);
    if (count < 0) fail("%s; the build is damaged: rebuild it (scons variant=...) or reinstall the package%s", why, "");

    const char *forced = getenv("AMXFORGE_VARIANT");
    int chosen = -1;
    char reasons[4096] = "";
    for (int i = 0; i < count && chosen < 0; i++) {
        if (forced && *forced && strcmp(forced, v[i].name)) continue;
        char msg[512];
        int rc = akf_check_features(v[i].name, v[i].features, msg, sizeof msg);
        if (explain()) fprintf(stderr, "%s: variant %s: %s\n", prog, v[i].name, rc == AKF_OK ? "runs here" : msg);
        if (rc == AKF_OK) chosen = i;
        else {
            size_t used = strlen(reasons);
            snprintf(reasons + used, sizeof reasons - used, "%s%s", used ? "; " : "", msg);
        }
    }
    if (chosen < 0) {
        if (forced && *forced && !reasons[0]) {
            char names[1024] = "";
            for (int i = 0; i < count; i++) {
                if (i) strncat(names, ", ", sizeof names - strlen(names) - 1);
                strncat(names, v[i].name, sizeof names - strlen(names) - 1);
            }
            fail("AMXFORGE_VARIANT=%s is not a variant of this build; choose one of: %s", forced, names);
        }
        if (count == 1 || (forced && *forced))
            fail("variant %s cannot run on this host: %s", forced && *forced ? forced : v[0].name, reasons);
        fail("no variant of this build runs on this host: %s%s", reasons, "");
    }
    char real[3 * PATH_MAX];
    if (snprintf(real, sizeof real, "%s/%s/libexec/%s", root, v[chosen].dir, target) >= (int)sizeof real)
        fail("the path of %s's real binary is too long%s", target, "");
    if (explain()) fprintf(stderr, "%s: running variant %s: %s\n", prog, v[chosen].name, real);
    setenv("AMXFORGE_LAUNCHED_VARIANT", v[chosen].name, 1);
    execv(real, argv);
    fail("cannot run %s: %s; the build is damaged: rebuild it or reinstall the package", real, strerror(errno));
    return AKF_EXIT_UNSUPPORTED;
}
