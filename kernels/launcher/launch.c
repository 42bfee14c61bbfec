/* amxforge-launch (class `portable`: plain x86-64, so it runs on ANY x86-64 CPU): the guard in front of every
 * binary amxforge installs, and the selector of a package. bin/<target> is a copy of this program; the real binary
 * is <dir>/libexec/<target> of a variant listed in the launch table, share/amxforge/launch.tsv, beside bin/ (one
 * variant for a build; all of them, best first, for a package). It checks each variant's CPU features (CPUID), the
 * register state the OS enabled (XCR0) and, for AMX, Linux's permission (arch_prctl), runs the first variant that
 * can run here, and otherwise prints why and exits 2: never SIGILL. It never loads anything of a variant it rejects.
 *
 *   AMXFORGE_VARIANT=NAME    run that variant or say why it cannot (exit 2)
 *   AMXFORGE_EXPLAIN=1       print on stderr each variant's verdict, the CUDA driver and devices, and the choice
 *   AMXFORGE_PREFERENCE=FILE the host preference file: the first that exists of toolchain/selector.toml's search order
 *                            (this variable, then the user's file, then /etc/amxforge/preference); lines
 *                            "PACKAGE VARIANT [VARIANT...]" ("*" for any package); the runnable ones listed are tried
 *                            first, in that order
 *   AMXFORGE_VERIFY=1        check every file of the chosen variant by CRC-32 even where its stamp says it was
 *   AMXFORGE_GUARD_HIDE      make the guard treat features (and xcr0_<state>, amx_permission) as absent (tests)
 *   AMXFORGE_GUARD_CUDA      a simulated CUDA driver instead of libcuda (tests; see akf_selector.h)
 *
 * Table (written by amxforge, tab-separated):
 *   amxforge-launch<TAB>1[<TAB>PACKAGE]
 *   variant<TAB>NAME<TAB>DIR<TAB>FEATURES[<TAB>gpu<TAB>SASS<TAB>PTX<TAB>DRIVER]
 *                                                          DIR relative to the root (the parent of bin/); a CUDA
 *                                                          variant's GPU code (akf_selector.h) and the driver it needs
 *   file<TAB>VARIANT<TAB>PATH<TAB>SIZE<TAB>CRC32            a package's files: the chosen variant's are checked at
 *                                                          every start (size and CRC-32; the manifest has SHA-256)
 *   env<TAB>VARIANT<TAB>NAME<TAB>PATH                      when VARIANT runs and NAME is unset or empty, NAME is
 *                                                          set to DIR/PATH (a ggml backend library of ours:
 *                                                          GGML_BACKEND_PATH, so ggml's loader takes that variant's)
 *   manifest<TAB>PATH<TAB>CRC32                            so is the package manifest (a package must have one,
 *                                                          and a file line for every variant)
 *   end<TAB>LINES<TAB>CRC32                                last: the count and CRC-32 of every line before it, so
 *                                                          that a table cut at a line boundary, or missing a line,
 *                                                          is damaged, not trusted
 * A damaged release (the table, a file missing or not matching its checksum) is named and exits 2. Every file it
 * reads must be a regular file (a FIFO is refused at once, never waited on). The chosen variant's files are checked by
 * size at every start and by CRC-32 once, then while their stamp (device, inode, size, mtime, ctime) holds; `amxforge
 * verify` checks a whole release against the manifest's SHA-256. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "akf_file.h"
#include "akf_preference.h"
#include "akf_selector.h"
#include "amxforge_kernels.h"

#define TABLE_PATH "share/amxforge/launch.tsv"
#define MAX_VARIANTS 16
#define MAX_FILES 512
#define MAX_TABLE (1 << 20)

struct variant { char name[64], dir[256], features[1024]; int gpu; struct akf_gpu_need need; };
struct file { char variant[64], path[512], crc[9]; long long size; };

static const char *prog = "amxforge-launch";
static char package[128] = "";
static struct file files[MAX_FILES];
static int nfiles = 0;
/* variables set for a variant's program where the caller left them unset (a ggml backend library of that variant) */
#define MAX_ENV 16
struct setting { char variant[64], name[64], path[512]; };
static struct setting settings[MAX_ENV];
static int nsettings = 0;
static char manifest_path[512] = "", manifest_crc[9] = "", table_crc[9] = "";

static void fail(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    exit(AKF_EXIT_UNSUPPORTED);
}

/* ---- CRC-32 (the zlib polynomial), slicing by 8: checks a package's files at every start (about 1.5 GB/s on one
 * core, where a portable SHA-256 took half a second for ik_llama.cpp's libraries); the manifest keeps SHA-256. ---- */
static uint32_t CRC[8][256];

static void crc_tables(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        CRC[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) CRC[t][i] = (CRC[t - 1][i] >> 8) ^ CRC[0][CRC[t - 1][i] & 0xFF];
}

/* CRC-32 state c (start 0xFFFFFFFF, finish by ^ 0xFFFFFFFF) over n more bytes. */
static uint32_t crc32_update(uint32_t c, const unsigned char *buf, size_t n) {
    if (!CRC[0][1]) crc_tables();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint32_t lo, hi;
        memcpy(&lo, buf + i, 4);
        memcpy(&hi, buf + i + 4, 4);
        lo ^= c;
        c = CRC[7][lo & 0xFF] ^ CRC[6][(lo >> 8) & 0xFF] ^ CRC[5][(lo >> 16) & 0xFF] ^ CRC[4][lo >> 24] ^
            CRC[3][hi & 0xFF] ^ CRC[2][(hi >> 8) & 0xFF] ^ CRC[1][(hi >> 16) & 0xFF] ^ CRC[0][hi >> 24];
    }
    for (; i < n; i++) c = CRC[0][(c ^ buf[i]) & 0xFF] ^ (c >> 8);
    return c;
}

/* The CRC-32 of a regular file as 8 hex digits into out[9]; -1 (why in msg) if it cannot be read. */
static int crc32_file(const char *path, char out[9], char *msg, size_t len) {
    FILE *f = akf_open_regular(path, NULL, msg, len);
    if (!f) return -1;
    static unsigned char buf[1 << 16];
    uint32_t c = 0xFFFFFFFFu;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) c = crc32_update(c, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) { snprintf(msg, len, "%s: read error", path); return -1; }
    snprintf(out, 9, "%08x", c ^ 0xFFFFFFFFu);
    return 0;
}

/* ---- the table ----------------------------------------------------------------------------------------------- */
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

/* The table, whole (at most MAX_TABLE bytes), checked against its end line before any line is trusted; then parsed.
 * Returns the number of variants, or -1 with why. */
static int load_table(const char *path, struct variant *v, char *why, size_t len) {
    long long size = 0;
    char what[PATH_MAX + 64];
    FILE *f = akf_open_regular(path, &size, what, sizeof what);
    if (!f) { snprintf(why, len, "cannot read %s", what); return -1; }
    static char text[MAX_TABLE + 1];
    size_t got = fread(text, 1, MAX_TABLE + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got > MAX_TABLE) {
        snprintf(why, len, "%s: %s", path, bad ? "read error" : "larger than any launch table");
        return -1;
    }
    text[got] = '\0';
    if (got == 0) { snprintf(why, len, "%s: empty: not an amxforge launch table", path); return -1; }
    if (strlen(text) != got || text[got - 1] != '\n') {
        snprintf(why, len, "%s: damaged (cut short, or not text)", path);
        return -1;
    }
    /* the end line: LINES and CRC-32 of everything before it */
    text[got - 1] = '\0';
    char *last = strrchr(text, '\n');
    last = last ? last + 1 : text;
    char tag[32], count[32], sum[16], actual[9];
    unsigned long lines_before = 0;
    for (const char *p = text; p < last; p++) lines_before += *p == '\n';
    snprintf(actual, sizeof actual, "%08x", crc32_update(0xFFFFFFFFu, (const unsigned char *)text,
                                                         (size_t)(last - text)) ^ 0xFFFFFFFFu);
    char *end = NULL;
    if (!field(last, 0, tag, sizeof tag) || strcmp(tag, "end") || !field(last, 1, count, sizeof count) ||
        !field(last, 2, sum, sizeof sum) || strtoul(count, &end, 10) != lines_before || !end || *end ||
        strcmp(sum, actual)) {
        snprintf(why, len, "%s: damaged (its end line does not match the lines before it: cut short or edited)",
                 path);
        return -1;
    }
    *last = '\0';
    snprintf(table_crc, sizeof table_crc, "%s", actual);

    char line[2048], size_text[32];
    int n = 0, lineno = 0;
    for (char *save = NULL, *row = strtok_r(text, "\n", &save); row; row = strtok_r(NULL, "\n", &save)) {
        lineno++;
        if (strlen(row) >= sizeof line) { snprintf(why, len, "%s:%d: line too long", path, lineno); return -1; }
        snprintf(line, sizeof line, "%s", row);
        if (lineno == 1) {
            if (!field(line, 0, tag, sizeof tag) || strcmp(tag, "amxforge-launch") || !field(line, 1, tag, sizeof tag) ||
                strcmp(tag, "1")) {
                snprintf(why, len, "%s: not an amxforge launch table (version 1)", path);
                return -1;
            }
            if (!field(line, 2, package, sizeof package)) package[0] = '\0';
            continue;
        }
        if (line[0] == '#') continue;
        int ok = field(line, 0, tag, sizeof tag);
        if (ok && !strcmp(tag, "file")) {
            if (nfiles == MAX_FILES) { snprintf(why, len, "%s: more than %d files", path, MAX_FILES); return -1; }
            struct file *fl = &files[nfiles++];
            char *num_end = NULL;
            ok = field(line, 1, fl->variant, sizeof fl->variant) && field(line, 2, fl->path, sizeof fl->path) &&
                 field(line, 3, size_text, sizeof size_text) && field(line, 4, fl->crc, sizeof fl->crc) &&
                 strlen(fl->crc) == 8;
            fl->size = ok ? strtoll(size_text, &num_end, 10) : -1;
            ok = ok && num_end && *num_end == '\0' && fl->size >= 0;
        } else if (ok && !strcmp(tag, "env")) {
            if (nsettings == MAX_ENV) { snprintf(why, len, "%s: more than %d env lines", path, MAX_ENV); return -1; }
            struct setting *st = &settings[nsettings++];
            ok = field(line, 1, st->variant, sizeof st->variant) && field(line, 2, st->name, sizeof st->name) &&
                 st->name[0] && !strchr(st->name, '=') && field(line, 3, st->path, sizeof st->path) && st->path[0];
        } else if (ok && !strcmp(tag, "manifest")) {
            ok = field(line, 1, manifest_path, sizeof manifest_path) &&
                 field(line, 2, manifest_crc, sizeof manifest_crc) && strlen(manifest_crc) == 8;
        } else if (ok && !strcmp(tag, "variant")) {
            if (n == MAX_VARIANTS) { snprintf(why, len, "%s: more than %d variants", path, MAX_VARIANTS); return -1; }
            char extra[16] = "", driver[16] = "";
            ok = field(line, 1, v[n].name, sizeof v[n].name) && v[n].name[0] &&
                 field(line, 2, v[n].dir, sizeof v[n].dir) && field(line, 3, v[n].features, sizeof v[n].features);
            v[n].gpu = ok && field(line, 4, extra, sizeof extra) && !strcmp(extra, "gpu");
            if (v[n].gpu) { /* SASS, PTX ("-": none), the driver it needs */
                ok = field(line, 5, v[n].need.sass, sizeof v[n].need.sass) &&
                     field(line, 6, v[n].need.ptx, sizeof v[n].need.ptx) && field(line, 7, driver, sizeof driver);
                if (!strcmp(v[n].need.ptx, "-")) v[n].need.ptx[0] = '\0';
                v[n].need.driver = atoi(driver);
            } else ok = ok && !extra[0];
            n += ok;
        } else ok = 0;
        if (!ok) {
            snprintf(why, len, "%s:%d: damaged (want variant, file, env or manifest lines)", path, lineno);
            return -1;
        }
    }
    if (n == 0) { snprintf(why, len, "%s: lists no variant", path); return -1; }
    if (package[0]) { /* a release: its manifest and every variant's files are checked, so they must be listed */
        if (!manifest_path[0]) { snprintf(why, len, "%s: a package table without its manifest line", path); return -1; }
        for (int i = 0; i < n; i++) {
            int listed = 0;
            for (int k = 0; k < nfiles && !listed; k++) listed = !strcmp(files[k].variant, v[i].name);
            if (!listed) {
                snprintf(why, len, "%.4000s: variant %.63s has no file lines", path, v[i].name);
                return -1;
            }
        }
    }
    return n;
}

static int explain(void) {
    const char *e = getenv("AMXFORGE_EXPLAIN");
    return e && *e && strcmp(e, "0") != 0;
}

/* ---- the host preference -------------------------------------------------------------------------------------- */
/* A search-order path with its {NAME} variables filled in; 0 when one is unset or empty. */
static int expand_path(const char *pattern, char *out, size_t len) {
    size_t used = 0;
    for (const char *p = pattern; *p;) {
        const char *text = p, *close;
        size_t n = 1;
        char name[64];
        if (*p == '{' && (close = strchr(p, '}')) && (size_t)(close - p - 1) < sizeof name) {
            snprintf(name, sizeof name, "%.*s", (int)(close - p - 1), p + 1);
            text = getenv(name);
            if (!text || !*text) return 0;
            n = strlen(text);
            p = close + 1;
        } else p++;
        if (used + n >= len) return 0;
        memcpy(out + used, text, n);
        used += n;
    }
    out[used] = '\0';
    return 1;
}

/* The variant names the preference file lists for this package (or "*"), space-separated into out; "" if none. The
 * file is the first of the search order that exists; source names it. Lines it cannot use are said (EXPLAIN). */
static void preference(char *out, size_t len, char *source, size_t slen, struct variant *v, int count) {
    char path[PATH_MAX], why[PATH_MAX + 64];
    out[0] = source[0] = '\0';
    FILE *f = NULL;
    for (int c = 0; c < AKF_PREFERENCE_COUNT && !f; c++) {
        if (!expand_path(AKF_PREFERENCE_PATHS[c], path, sizeof path) || access(path, F_OK) != 0) continue;
        f = akf_open_regular(path, NULL, why, sizeof why); /* a FIFO here must not hang every start */
        if (!f) {
            if (explain()) fprintf(stderr, "%s: the host preference is ignored: %s\n", prog, why);
            return;
        }
    }
    if (!f) return;
    snprintf(source, slen, "%s", path);
    char line[1024], pkg[128], best[1024] = "";
    int lineno = 0, specific = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) { /* a line longer than any preference: its rest is skipped */
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n') {}
            if (explain()) fprintf(stderr, "%s: %s:%d: too long, not used\n", prog, path, lineno);
            continue;
        }
        line[strcspn(line, "#\n")] = '\0';
        if (sscanf(line, "%127s", pkg) != 1) continue; /* blank or a comment */
        char *rest = line + strspn(line, " \t") + strlen(pkg);
        rest += strspn(rest, " \t");
        for (size_t end = strlen(rest); end && (rest[end - 1] == ' ' || rest[end - 1] == '\t'); end--) rest[end - 1] = '\0';
        if (strcmp(pkg, "*") && strcmp(pkg, package)) continue; /* another package's line */
        char names[1024] = "", unknown[256] = "";
        snprintf(names, sizeof names, "%s", rest);
        int known = 0;
        for (char *save = NULL, *tok = strtok_r(names, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
            int found = 0;
            for (int i = 0; i < count && !found; i++) found = !strcmp(tok, v[i].name);
            known += found;
            if (!found) {
                size_t u = strlen(unknown);
                snprintf(unknown + u, sizeof unknown - u, "%s%s", u ? " " : "", tok);
            }
        }
        if (explain() && (unknown[0] || !known))
            fprintf(stderr, "%s: %s:%d: %s%s\n", prog, path, lineno, known ? "names no variant of this package: " :
                    "names no variant of this package, not used", known ? unknown : "");
        if (!known || (specific && !strcmp(pkg, "*"))) continue;
        snprintf(best, sizeof best, "%s", rest);
        specific = strcmp(pkg, "*") != 0; /* a line for this package wins over "*" */
    }
    fclose(f);
    snprintf(out, len, "%s", best);
}

/* ---- verification of the chosen variant ------------------------------------------------------------------------ */
static int verify_forced(void) {
    const char *e = getenv("AMXFORGE_VERIFY");
    return e && *e && strcmp(e, "0") != 0;
}

/* The chosen variant's files and the manifest: present and of their recorded size at every start; their CRC-32 once,
 * and again whenever their stamp (device, inode, size, mtime, ctime) no longer holds or AMXFORGE_VERIFY=1 asks. */
static void verify(const char *root, const char *variant) {
    static char store[MAX_FILES + 1][2 * PATH_MAX];
    char *paths[MAX_FILES + 1], sum[9], why[2 * PATH_MAX + 128], key[PATH_MAX + 128];
    const char *crcs[MAX_FILES + 1];
    int n = 0;
    if (manifest_path[0]) {
        snprintf(store[n], sizeof store[n], "%s/%s", root, manifest_path);
        crcs[n] = manifest_crc;
        paths[n] = store[n];
        n++;
    }
    for (int i = 0; i < nfiles; i++) {
        if (strcmp(files[i].variant, variant)) continue;
        struct stat st;
        snprintf(store[n], sizeof store[n], "%s/%s", root, files[i].path);
        if (stat(store[n], &st) != 0)
            fail("the release is damaged: %s is missing (%s); reinstall the package", store[n], strerror(errno));
        if ((long long)st.st_size != files[i].size)
            fail("the release is damaged: %s does not match its size; reinstall the package%s", store[n], "");
        crcs[n] = files[i].crc;
        paths[n] = store[n];
        n++;
    }
    if (n == 0) return; /* a build's table: nothing recorded to check */
    snprintf(key, sizeof key, "%s|%s|%s", root, variant, table_crc);
    if (!verify_forced() && akf_stamp_matches(key, paths, n)) {
        if (explain()) fprintf(stderr, "%s: %d files of variant %s: sizes checked, their stamp holds (AMXFORGE_VERIFY=1 "
                               "checks the CRC-32s)\n", prog, n, variant);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (crc32_file(paths[i], sum, why, sizeof why) != 0)
            fail("the release is damaged: %s; reinstall the package%s", why, "");
        if (strcmp(sum, crcs[i]))
            fail("the release is damaged: %s does not match its checksum; reinstall the package%s", paths[i], "");
    }
    akf_stamp_write(key, paths, n);
    if (explain()) fprintf(stderr, "%s: %d files of variant %s: checked by CRC-32, stamp written\n", prog, n, variant);
}

/* May variant v run here? AKF_OK, or a status with the reason in msg. */
static int judge(const struct variant *v, char *msg, size_t len) {
    int rc = akf_check_features(v->name, v->features, msg, len);
    if (rc == AKF_OK && v->gpu) rc = akf_gpu_check(v->name, &v->need, msg, len);
    return rc;
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

    /* the order to try: the host's preference first (runnable ones it names), then the table's */
    int order[MAX_VARIANTS], norder = 0, used[MAX_VARIANTS] = {0};
    char pref[1024], source[PATH_MAX];
    preference(pref, sizeof pref, source, sizeof source, v, count);
    if (explain() && source[0])
        fprintf(stderr, "%s: the host preference (%s) puts first: %s\n", prog, source, pref[0] ? pref : "nothing");
    if (explain())
        for (int i = 0; i < count; i++)
            if (v[i].gpu) { akf_gpu_describe(stderr, prog); break; }
    for (char *save = NULL, *tok = strtok_r(pref, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save))
        for (int i = 0; i < count; i++)
            if (!used[i] && !strcmp(tok, v[i].name)) { order[norder++] = i; used[i] = 1; }
    for (int i = 0; i < count; i++)
        if (!used[i]) order[norder++] = i;

    const char *forced = getenv("AMXFORGE_VARIANT");
    int chosen = -1;
    char reasons[4096] = "";
    for (int k = 0; k < norder && chosen < 0; k++) {
        const struct variant *c = &v[order[k]];
        if (forced && *forced && strcmp(forced, c->name)) continue;
        char msg[512];
        int rc = judge(c, msg, sizeof msg);
        if (explain()) fprintf(stderr, "%s: variant %s: %s\n", prog, c->name, rc == AKF_OK ? "runs here" : msg);
        if (rc == AKF_OK) chosen = order[k];
        else {
            size_t used_len = strlen(reasons);
            snprintf(reasons + used_len, sizeof reasons - used_len, "%s%s", used_len ? "; " : "", msg);
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
    verify(root, v[chosen].name);
    char real[3 * PATH_MAX];
    if (snprintf(real, sizeof real, "%s/%s/libexec/%s", root, v[chosen].dir, target) >= (int)sizeof real)
        fail("the path of %s's real binary is too long%s", target, "");
    if (explain()) fprintf(stderr, "%s: running variant %s: %s\n", prog, v[chosen].name, real);
    setenv("AMXFORGE_LAUNCHED_VARIANT", v[chosen].name, 1);
    for (int i = 0; i < nsettings; i++) {
        const char *now = getenv(settings[i].name);
        if (strcmp(settings[i].variant, v[chosen].name) || (now && *now)) continue;
        char value[3 * PATH_MAX];
        if (snprintf(value, sizeof value, "%s/%s/%s", root, v[chosen].dir, settings[i].path) >= (int)sizeof value)
            fail("the path of %s is too long%s", settings[i].path, "");
        setenv(settings[i].name, value, 1);
        if (explain()) fprintf(stderr, "%s: %s=%s\n", prog, settings[i].name, value);
    }
    execv(real, argv);
    fail("cannot run %s: %s; the build is damaged: rebuild it or reinstall the package", real, strerror(errno));
    return AKF_EXIT_UNSUPPORTED;
}
