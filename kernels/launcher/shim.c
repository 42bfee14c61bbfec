/* amxforge-shim: the compiler launcher for fork builds (CMAKE_<LANG>_COMPILER_LAUNCHER), class `portable`.
 * Boring, total and logged:
 *
 *     amxforge-shim CONFIG <compiler> <args...>
 *     AMXFORGE_SHIM_DRY_RUN=1 amxforge-shim CONFIG <compiler> <args...>   print the record (the rewritten command)
 *                                                                         as one JSON line, run nothing
 *
 * Per compilation unit: classify the source by the policy's rules, remove the ISA flags the policy owns (-march=*,
 * -mtune=*, every -m<feature>/-mno-<feature>; for nvcc its arch options and the ISA flags inside -Xcompiler), add the
 * class's rendered flags, run the real compiler (through ccache when configured, and icecc under dist=icecc) and
 * append one JSON line to the ledger. The compiler's output and exit code pass through unchanged. Anything that is
 * not a compilation (a link, a preprocessing run, a version query) runs as is and leaves a ledger line too, with its
 * mode. As the linker launcher (CMAKE_<LANG>_LINKER_LAUNCHER, fork_kernels=amxforge) its config adds `wrap` records:
 * every link gets -Wl,--wrap=<entry> for each and the `link_add` arguments (our handler's archive), recorded in its
 * ledger line, so that the fork's calls of the entry reach our kernels (kernels/hook/). A config that does not fit
 * the tables, a rule naming a class without flags, or a unit no rule matches is an error (exit 2), never a silent
 * default or a truncation.
 * CONFIG is written by amxforge (fork/driver.py): one record per line, fields separated by tabs. Written in C because
 * it runs once per unit: a Python launcher cost ~39 ms per unit, 20 % of the fixture's build (measured). */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ITEMS 4096

struct list { char *v[MAX_ITEMS]; int n; };
struct rule { char *id, *cls, *glob; regex_t re; };
struct class_flags { char *name; struct list flags; };

static struct {
    char *variant, *policy, *root, *ledger, *ccache, *scan_must_be;
    struct list owned, prefixes, nvcc_arch, nvcc_host, scan_suffixes, cuda, common, wrap, link_add;
    struct rule rules[256];
    int nrules;
    struct class_flags classes[16];
    int nclasses;
    regex_t scan;
    int has_scan;
} cfg;

static void die(const char *what, const char *detail) {
    fprintf(stderr, "amxforge-shim: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(2);
}

static void push(struct list *l, char *s) {
    if (l->n >= MAX_ITEMS) die("too many items in a list", NULL);
    l->v[l->n++] = s;
}

static int in_list(const struct list *l, const char *s) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0) return 1;
    return 0;
}

static void load_config(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot read the config", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        if (line[len - 1] == '\n') line[--len] = '\0';
        char *fields[512];
        int n = 0;
        for (char *save = NULL, *tok = strtok_r(strdup(line), "\t", &save); tok; tok = strtok_r(NULL, "\t", &save)) {
            if (n == 512) die("a config record has more than 512 fields", line);
            fields[n++] = tok;
        }
        if (n == 0) continue;
        const char *key = fields[0];
        if (!strcmp(key, "variant") && n > 1) cfg.variant = fields[1];
        else if (!strcmp(key, "policy") && n > 1) cfg.policy = fields[1];
        else if (!strcmp(key, "root") && n > 1) cfg.root = fields[1];
        else if (!strcmp(key, "ledger") && n > 1) cfg.ledger = fields[1];
        else if (!strcmp(key, "ccache") && n > 1) cfg.ccache = fields[1];
        else if (!strcmp(key, "owned")) for (int i = 1; i < n; i++) push(&cfg.owned, fields[i]);
        else if (!strcmp(key, "prefix")) for (int i = 1; i < n; i++) push(&cfg.prefixes, fields[i]);
        else if (!strcmp(key, "nvcc_arch")) for (int i = 1; i < n; i++) push(&cfg.nvcc_arch, fields[i]);
        else if (!strcmp(key, "nvcc_host")) for (int i = 1; i < n; i++) push(&cfg.nvcc_host, fields[i]);
        else if (!strcmp(key, "scan_suffix")) for (int i = 1; i < n; i++) push(&cfg.scan_suffixes, fields[i]);
        else if (!strcmp(key, "cuda")) for (int i = 1; i < n; i++) push(&cfg.cuda, fields[i]);
        else if (!strcmp(key, "common")) for (int i = 1; i < n; i++) push(&cfg.common, fields[i]);
        else if (!strcmp(key, "wrap")) for (int i = 1; i < n; i++) push(&cfg.wrap, fields[i]);
        else if (!strcmp(key, "link_add")) for (int i = 1; i < n; i++) push(&cfg.link_add, fields[i]);
        else if (!strcmp(key, "scan_must_be") && n > 1) cfg.scan_must_be = fields[1];
        else if (!strcmp(key, "scan") && n > 1) {
            if (regcomp(&cfg.scan, fields[1], REG_EXTENDED) != 0) die("bad content-scan regex", fields[1]);
            cfg.has_scan = 1;
        } else if (!strcmp(key, "rule")) {
            if (n != 5) die("a rule record needs id, class, glob and regex", line);
            if (cfg.nrules == 256) die("more than 256 class rules", fields[1]);
            struct rule *r = &cfg.rules[cfg.nrules++];
            r->id = fields[1]; r->cls = fields[2]; r->glob = fields[3];
            if (regcomp(&r->re, fields[4], REG_EXTENDED | REG_NOSUB) != 0) die("bad rule regex", fields[4]);
        } else if (!strcmp(key, "class") && n > 1) {
            if (cfg.nclasses == 16) die("more than 16 unit classes", fields[1]);
            struct class_flags *c = &cfg.classes[cfg.nclasses++];
            c->name = fields[1];
            for (int i = 2; i < n; i++) push(&c->flags, fields[i]);
        }
    }
    fclose(f);
    if (!cfg.root || !cfg.ledger || !cfg.variant || !cfg.policy) die("config lacks root, ledger, variant or policy", path);
    for (int i = 0; i < cfg.nrules; i++) { /* every rule's class has flags (cuda units get the cuda record) */
        int found = !strcmp(cfg.rules[i].cls, "cuda");
        for (int c = 0; c < cfg.nclasses && !found; c++) found = !strcmp(cfg.classes[c].name, cfg.rules[i].cls);
        if (!found) die("a rule names a class without flags (toolchain/classes.toml)", cfg.rules[i].id);
    }
}

static int owned(const char *flag) {
    if (in_list(&cfg.owned, flag)) return 1;
    for (int i = 0; i < cfg.prefixes.n; i++)
        if (strncmp(flag, cfg.prefixes.v[i], strlen(cfg.prefixes.v[i])) == 0) return 1;
    return 0;
}

static int has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int is_source(const char *a) {
    static const char *suffixes[] = {".c", ".cc", ".cpp", ".cxx", ".cu", ".s", ".S"};
    if (a[0] == '-') return 0;
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++)
        if (has_suffix(a, suffixes[i])) return 1;
    return 0;
}

static const struct list *class_flags(const char *name) {
    for (int i = 0; i < cfg.nclasses; i++)
        if (!strcmp(cfg.classes[i].name, name)) return &cfg.classes[i].flags;
    die("no flags for class", name);
    return NULL;
}

/* ---- JSON ledger line ----------------------------------------------------------------------------------------- */
struct buf { char *s; size_t n, cap; };

static void put(struct buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        if (!b->s) die("out of memory", NULL);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}
static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static void json_str(struct buf *b, const char *s) {
    puts_(b, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') { esc[0] = '\\'; esc[1] = (char)*p; put(b, esc, 2); }
        else if (*p < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", *p); puts_(b, esc); }
        else put(b, (const char *)p, 1);
    }
    puts_(b, "\"");
}

static void json_list(struct buf *b, char *const *v, int n) {
    puts_(b, "[");
    for (int i = 0; i < n; i++) {
        if (i) puts_(b, ", ");
        json_str(b, v[i]);
    }
    puts_(b, "]");
}

/* The ledger is the build's proof (fork/driver.py checks every compile against it): a line that cannot be written
 * whole fails the unit, exit 2, rather than leave a hole. */
static void append_ledger(const char *line) {
    int fd = open(cfg.ledger, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) die("cannot open the ledger", cfg.ledger);
    while (flock(fd, LOCK_EX) != 0) /* parallel compiles append whole lines */
        if (errno != EINTR) die("cannot lock the ledger", strerror(errno));
    size_t n = strlen(line), done = 0;
    while (done < n) {
        ssize_t w = write(fd, line + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("cannot write the ledger", w < 0 ? strerror(errno) : cfg.ledger);
        done += (size_t)w;
    }
    if (close(fd) != 0) die("cannot write the ledger", strerror(errno));
}

static int run(char *const *argv) {
    pid_t pid = fork();
    if (pid < 0) die("fork failed", strerror(errno));
    if (pid == 0) {
        execvp(argv[0], argv);
        fprintf(stderr, "amxforge-shim: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) die("waitpid failed", strerror(errno));
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The content scan: a unit that uses AMX intrinsics must be classed amx. */
static int scan_error(const char *path, const char *cls, const char *rule) {
    if (!cfg.has_scan || (cfg.scan_must_be && !strcmp(cls, cfg.scan_must_be))) return 0;
    int listed = 0;
    for (int i = 0; i < cfg.scan_suffixes.n; i++) listed |= has_suffix(path, cfg.scan_suffixes.v[i]);
    if (!listed) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    size_t got = fread(text, 1, (size_t)size, f);
    fclose(f);
    text[got] = '\0';
    regmatch_t m;
    if (regexec(&cfg.scan, text, 1, &m, 0) != 0) return 0;
    int line = 1;
    for (regoff_t i = 0; i < m.rm_so; i++) line += text[i] == '\n';
    fprintf(stderr, "amxforge: %s:%d: uses AMX intrinsics ('%.*s') but is classed %s by rule '%s'; add it to an amx "
            "rule in toolchain/classes.toml\n", path, line, (int)(m.rm_eo - m.rm_so), text + m.rm_so, cls, rule);
    return 1;
}

static double since(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* A link, a preprocessing run, a version query: run unchanged, and say so in the ledger (key "output", not "object":
 * the ledger's readers take only compilations as units). */
static int pass_through(const char *mode, char **argv, int argc, const char *output, int dry) {
    struct buf b = {0};
    char num[160];
    static struct list cmd, added;
    for (int i = 0; i < argc; i++) push(&cmd, argv[i]);
    if (!strcmp(mode, "link") && cfg.wrap.n) { /* fork_kernels=amxforge: the entries through our handler */
        for (int i = 0; i < cfg.wrap.n; i++) {
            char *flag = malloc(strlen(cfg.wrap.v[i]) + 16);
            if (!flag) die("out of memory", NULL);
            sprintf(flag, "-Wl,--wrap=%s", cfg.wrap.v[i]);
            push(&added, flag);
        }
        for (int i = 0; i < cfg.link_add.n; i++) push(&added, cfg.link_add.v[i]);
        for (int i = 0; i < added.n; i++) push(&cmd, added.v[i]);
    }
    push(&cmd, NULL);
    cmd.n--;
    puts_(&b, "{\"mode\": "); json_str(&b, mode);
    puts_(&b, ", \"output\": "); if (output) json_str(&b, output); else puts_(&b, "null");
    puts_(&b, ", \"command\": "); json_list(&b, cmd.v, cmd.n);
    if (added.n) { puts_(&b, ", \"wrapped\": "); json_list(&b, cfg.wrap.v, cfg.wrap.n); }
    if (dry) { puts_(&b, "}\n"); fputs(b.s, stdout); return 0; }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = run(cmd.v);
    snprintf(num, sizeof num, ", \"rc\": %d, \"seconds\": %.3f", rc, since(&t0));
    puts_(&b, num);
    puts_(&b, ", \"variant\": "); json_str(&b, cfg.variant);
    puts_(&b, ", \"policy\": "); json_str(&b, cfg.policy);
    puts_(&b, "}\n");
    append_ledger(b.s);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: amxforge-shim CONFIG <compiler> <args...>\n");
        return 2;
    }
    const char *dry_env = getenv("AMXFORGE_SHIM_DRY_RUN");
    int dry = dry_env && *dry_env && strcmp(dry_env, "0") != 0;
    char *compiler = argv[2];
    char **args = argv + 3;
    int nargs = argc - 3, compiling = 0, preprocessing = 0;
    const char *source = NULL, *object = NULL;
    for (int i = 0; i < nargs; i++) {
        if (!strcmp(args[i], "-c")) compiling = 1;
        else if (!strcmp(args[i], "-E")) preprocessing = 1;
        else if (!strcmp(args[i], "-o") && i + 1 < nargs) object = args[i + 1];
        else if (!strncmp(args[i], "-o", 2) && args[i][2]) object = args[i] + 2;
        if (is_source(args[i])) source = args[i];
    }
    load_config(argv[1]);
    if (!compiling || !source || preprocessing)
        return pass_through(preprocessing ? "preprocess" : object ? "link" : "other", argv + 2, argc - 2, object, dry);
    const char *base = strrchr(compiler, '/');
    int nvcc = strncmp(base ? base + 1 : compiler, "nvcc", 4) == 0;

    char abs_src[PATH_MAX], abs_obj[2 * PATH_MAX + 2];
    if (!realpath(source, abs_src)) snprintf(abs_src, sizeof abs_src, "%s", source);
    size_t rootlen = strlen(cfg.root);
    const char *rel = strncmp(abs_src, cfg.root, rootlen) == 0 && abs_src[rootlen] == '/' ? abs_src + rootlen + 1 : abs_src;
    const char *cls = NULL, *rule = NULL, *glob = "";
    for (int i = 0; i < cfg.nrules; i++)
        if (regexec(&cfg.rules[i].re, rel, 0, NULL, 0) == 0) { cls = cfg.rules[i].cls; rule = cfg.rules[i].id; glob = cfg.rules[i].glob; break; }
    if (!cls) {
        fprintf(stderr, "amxforge-shim: no class rule matches %s; toolchain/classes.toml needs a rule for it (its last "
                "rule is normally the catch-all glob \"**\")\n", rel);
        return 2;
    }
    if (scan_error(abs_src, cls, rule)) return 1;

    /* the new command line: [ccache | icecc] compiler kept... added... The chain beyond ccache comes from the
     * environment the driver builds with: AMXFORGE_ICECC (icecc's path, dist=icecc) makes icecc ccache's prefix (or
     * the launcher itself without ccache) and asks icecc for a per-unit debug log in AMXFORGE_ICECC_LOGS, from which
     * the driver reads where the unit compiled. icecream distributes gcc and clang only: CUDA units are cached, and
     * compiled here. */
    static struct list final, removed;
    const char *icecc = getenv("AMXFORGE_ICECC"), *icecc_logs = getenv("AMXFORGE_ICECC_LOGS");
    int dist = icecc && *icecc && !nvcc;
    char icecc_log[PATH_MAX] = "";
    if (nvcc) unsetenv("CCACHE_PREFIX");
    if (dist) {
        if (cfg.ccache) setenv("CCACHE_PREFIX", icecc, 1);
        if (icecc_logs && *icecc_logs) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            if (snprintf(icecc_log, sizeof icecc_log, "%s/%ld-%ld.log", icecc_logs, (long)getpid(),
                         (long)now.tv_nsec) >= (int)sizeof icecc_log)
                die("AMXFORGE_ICECC_LOGS is too long a path", icecc_logs);
            setenv("ICECC_DEBUG", "debug", 1);
            setenv("ICECC_LOGFILE", icecc_log, 1);
        }
    }
    if (cfg.ccache) push(&final, cfg.ccache);
    else if (dist) push(&final, (char *)icecc);
    push(&final, compiler);
    for (int i = 0; i < nargs; i++) {
        char *arg = args[i];
        char *eq = strchr(arg, '=');
        size_t namelen = eq ? (size_t)(eq - arg) : strlen(arg);
        char name[256];
        if (namelen >= sizeof name) namelen = 0; /* no owned flag is that long: compared as "", kept */
        snprintf(name, sizeof name, "%.*s", (int)namelen, arg);
        if (nvcc && in_list(&cfg.nvcc_arch, name)) {
            push(&removed, arg);
            if (!eq && i + 1 < nargs) push(&removed, args[++i]);
        } else if (nvcc && in_list(&cfg.nvcc_host, name)) {
            char *value = eq ? eq + 1 : (i + 1 < nargs ? args[++i] : "");
            char kept[8192] = "-Xcompiler=";
            int any = 0;
            for (char *save = NULL, *tok = strtok_r(strdup(value), ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
                if (owned(tok)) push(&removed, tok);
                else {
                    if (strlen(kept) + strlen(tok) + 2 > sizeof kept) die("an -Xcompiler list longer than 8 KiB", value);
                    if (any) strcat(kept, ",");
                    strcat(kept, tok);
                    any = 1;
                }
            }
            if (any) push(&final, strdup(kept));
        } else if (!nvcc && owned(arg)) push(&removed, arg);
        else push(&final, arg);
    }
    const struct list *added = nvcc ? &cfg.cuda : class_flags(strcmp(cls, "cuda") ? cls : "default");
    for (int i = 0; i < added->n; i++) push(&final, added->v[i]);
    /* flags every compile gets (not ISA flags: the reproducible-build path maps), through -Xcompiler for nvcc */
    for (int i = 0; i < cfg.common.n; i++) {
        if (!nvcc) { push(&final, cfg.common.v[i]); continue; }
        char *x = malloc(strlen(cfg.common.v[i]) + 12);
        if (!x) die("out of memory", NULL);
        sprintf(x, "-Xcompiler=%s", cfg.common.v[i]);
        push(&final, x);
    }
    push(&final, NULL);
    final.n--;

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = dry ? 0 : run(final.v);
    double seconds = dry ? 0.0 : since(&t0);

    if (!object || !realpath(object, abs_obj)) {
        if (object && object[0] != '/') {
            char cwd[PATH_MAX];
            snprintf(abs_obj, sizeof abs_obj, "%s/%s", getcwd(cwd, sizeof cwd) ? cwd : ".", object);
        } else snprintf(abs_obj, sizeof abs_obj, "%s", object ? object : "");
    }
    struct buf b = {0};
    char num[160];
    puts_(&b, "{\"mode\": \"compile\", \"source\": "); json_str(&b, rel);
    puts_(&b, ", \"path\": "); json_str(&b, abs_src);
    puts_(&b, ", \"object\": "); if (object) json_str(&b, abs_obj); else puts_(&b, "null");
    puts_(&b, ", \"class\": "); json_str(&b, cls);
    puts_(&b, ", \"rule\": "); json_str(&b, rule);
    puts_(&b, ", \"glob\": "); json_str(&b, glob);
    puts_(&b, ", \"removed\": "); json_list(&b, removed.v, removed.n);
    puts_(&b, ", \"added\": "); json_list(&b, added->v, added->n);
    puts_(&b, ", \"flags_in\": "); json_list(&b, argv + 2, argc - 2);
    puts_(&b, ", \"command\": "); json_list(&b, final.v, final.n);
    puts_(&b, ", \"variant\": "); json_str(&b, cfg.variant);
    puts_(&b, ", \"policy\": "); json_str(&b, cfg.policy);
    if (icecc && *icecc) { /* dist=icecc: how this unit went (the driver turns the log into where it compiled) */
        puts_(&b, ", \"dist\": "); json_str(&b, nvcc ? "local: icecream distributes gcc/clang only" : "icecc");
        puts_(&b, ", \"icecc_log\": "); if (icecc_log[0]) json_str(&b, icecc_log); else puts_(&b, "null");
    }
    if (dry) { puts_(&b, "}\n"); fputs(b.s, stdout); return 0; } /* the rewritten command, nothing run or logged */
    snprintf(num, sizeof num, ", \"rc\": %d, \"seconds\": %.3f", rc, seconds);
    puts_(&b, num);
    /* what this compile left: the driver accepts an object only while it is still this one (a compile outside the
     * shim, CMake's or anyone's, changes its size or mtime) */
    struct stat st;
    if (rc == 0 && object && stat(abs_obj, &st) == 0) {
        snprintf(num, sizeof num, ", \"object_size\": %lld, \"object_mtime_ns\": %lld", (long long)st.st_size,
                 (long long)st.st_mtim.tv_sec * 1000000000LL + (long long)st.st_mtim.tv_nsec);
        puts_(&b, num);
    }
    puts_(&b, "}\n");
    append_ledger(b.s);
    return rc;
}
