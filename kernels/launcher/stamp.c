/* akf_stamp_matches, akf_stamp_write (class `portable`): see akf_selector.h. The stamp lives in
 * $XDG_CACHE_HOME/amxforge/verified/ (else ~/.cache/amxforge/verified/), one file per release and variant, a line
 * per file: device, inode, size, mtime and ctime in nanoseconds, path. ctime cannot be set back by a user, so a file
 * changed in any way since its CRC was checked no longer matches. Nothing here is required: a stamp that cannot be
 * read or written only means the next start checks the CRCs again. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "akf_file.h"
#include "akf_selector.h"

static int stamp_path(const char *key, char *out, size_t len) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char dir[PATH_MAX];
    if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/amxforge/verified", xdg);
    else if (home && *home) snprintf(dir, sizeof dir, "%s/.cache/amxforge/verified", home);
    else return -1;
    uint64_t h = 1469598103934665603ull; /* FNV-1a of the key: one name per release and variant */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) h = (h ^ *p) * 1099511628211ull;
    return snprintf(out, len, "%s/%016llx", dir, (unsigned long long)h) < (int)len ? 0 : -1;
}

static void line_of(const char *path, const struct stat *st, char *out, size_t len) {
    snprintf(out, len, "%llu %llu %lld %lld %lld %s\n", (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
             (long long)st->st_size, (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec,
             (long long)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec, path);
}

int akf_stamp_matches(const char *key, char *const *paths, int n) {
    char path[PATH_MAX + 32], why[PATH_MAX + 64], want[PATH_MAX + 128], got[PATH_MAX + 128];
    if (stamp_path(key, path, sizeof path) != 0) return 0;
    FILE *f = akf_open_regular(path, NULL, why, sizeof why);
    if (!f) return 0;
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        struct stat st;
        ok = stat(paths[i], &st) == 0 && fgets(got, sizeof got, f) != NULL;
        if (ok) {
            line_of(paths[i], &st, want, sizeof want);
            ok = strcmp(want, got) == 0;
        }
    }
    ok = ok && fgets(got, sizeof got, f) == NULL; /* no file more or fewer */
    fclose(f);
    return ok;
}

void akf_stamp_write(const char *key, char *const *paths, int n) {
    char path[PATH_MAX + 32], tmp[PATH_MAX + 64], line[PATH_MAX + 128];
    if (stamp_path(key, path, sizeof path) != 0) return;
    /* make the directory (two levels under the cache home at most) */
    for (char *slash = strchr(path + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) return;
        *slash = '/';
    }
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        struct stat st;
        ok = stat(paths[i], &st) == 0;
        if (ok) {
            line_of(paths[i], &st, line, sizeof line);
            ok = fputs(line, f) >= 0;
        }
    }
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) unlink(tmp);
}
