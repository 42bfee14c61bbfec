/* The sparse weight file (class `portable`): header, then masks, tile offsets, values, column sums.
 * The loader checks magic, version, dtype, sizes against the file length and an FNV-1a 64 checksum, and says
 * which check failed. All integers little-endian (x86-64). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "akf_file.h"
#include "akf_internal.h"


static const char MAGIC[8] = {'A', 'M', 'X', 'F', 'S', 'P', 'R', 'S'};
#define VERSION 1u

struct header {
    char magic[8];
    uint32_t version, dtype;
    int32_t K, N;
    uint64_t nnz, checksum;
};

struct section { void *data; size_t bytes; };

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int sections(const akf_sparse *S, struct section out[4]) {
    size_t tiles = (size_t)S->panels * S->ktiles;
    out[0] = (struct section){S->masks, akf_sparse_mask_bytes(S)};
    out[1] = (struct section){S->tile_off, (tiles + 1) * sizeof(uint64_t)};
    out[2] = (struct section){S->values, akf_sparse_value_bytes(S)};
    out[3] = (struct section){S->colsum, S->colsum ? (size_t)S->panels * 16 * sizeof(int32_t) : 0};
    return 4;
}

static uint64_t checksum(const akf_sparse *S) {
    struct section sec[4];
    uint64_t h = 1469598103934665603ull;
    for (int i = 0, n = sections(S, sec); i < n; i++) h = fnv1a(h, sec[i].data, sec[i].bytes);
    return h;
}

int akf_sparse_save(const akf_sparse *S, const char *path, char *msg, size_t len) {
    if (!S || !path) { snprintf(msg, len, "nothing to save"); return AKF_ERR_ARG; }
    struct header h = {{0}, VERSION, (uint32_t)S->dtype, S->K, S->N, S->nnz, checksum(S)};
    memcpy(h.magic, MAGIC, sizeof MAGIC);
    /* write to a temporary name, then rename: never a half-written file under the real name */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) { snprintf(msg, len, "cannot write %s", tmp); return AKF_ERR_ARG; }
    struct section sec[4];
    int ok = fwrite(&h, sizeof h, 1, f) == 1;
    for (int i = 0, n = sections(S, sec); i < n && ok; i++) ok = !sec[i].bytes || fwrite(sec[i].data, sec[i].bytes, 1, f) == 1;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        snprintf(msg, len, "writing %s failed (disk full?)", path);
        return AKF_ERR_ARG;
    }
    if (len) msg[0] = '\0';
    return AKF_OK;
}

akf_sparse *akf_sparse_load(const char *path, char *msg, size_t len) {
    long long size = 0;
    FILE *f = akf_open_regular(path, &size, msg, len); /* a directory or a FIFO is named, never read */
    if (!f) return NULL;
    struct header h;
    akf_sparse *S = NULL;
    if (size < (long long)sizeof h || fread(&h, sizeof h, 1, f) != 1) {
        snprintf(msg, len, "%s: truncated header (%lld bytes): not an amxforge sparse file", path, size);
        goto out;
    }
    if (memcmp(h.magic, MAGIC, sizeof MAGIC) != 0) { snprintf(msg, len, "%s: bad magic: not an amxforge sparse file", path); goto out; }
    if (h.version != VERSION) { snprintf(msg, len, "%s: version %u, this library reads version %u", path, h.version, VERSION); goto out; }
    if (h.dtype != AKF_BF16 && h.dtype != AKF_INT8) { snprintf(msg, len, "%s: unknown dtype %u", path, h.dtype); goto out; }
    if (h.K <= 0 || h.N <= 0 || h.nnz > (uint64_t)h.K * (uint64_t)h.N) {
        snprintf(msg, len, "%s: impossible sizes K=%d N=%d nnz=%llu", path, h.K, h.N, (unsigned long long)h.nnz);
        goto out;
    }
    S = akf_sparse_alloc((int)h.dtype, h.K, h.N, h.nnz);
    if (!S) { snprintf(msg, len, "%s: out of memory for K=%d N=%d", path, h.K, h.N); goto out; }
    struct section sec[4];
    size_t want = sizeof h;
    int n = sections(S, sec);
    for (int i = 0; i < n; i++) want += sec[i].bytes;
    if ((size_t)size != want) {
        snprintf(msg, len, "%s: %s: expected %zu bytes for K=%d N=%d nnz=%llu, file has %lld", path,
                 (size_t)size < want ? "truncated" : "trailing data", want, h.K, h.N, (unsigned long long)h.nnz, size);
        akf_sparse_free(S); S = NULL;
        goto out;
    }
    for (int i = 0; i < n; i++)
        if (sec[i].bytes && fread(sec[i].data, sec[i].bytes, 1, f) != 1) {
            snprintf(msg, len, "%s: read error", path);
            akf_sparse_free(S); S = NULL;
            goto out;
        }
    if (checksum(S) != h.checksum) {
        snprintf(msg, len, "%s: checksum mismatch: the file is corrupted", path);
        akf_sparse_free(S); S = NULL;
        goto out;
    }
    /* structural checks the checksum cannot give: offsets monotone and consistent with the masks */
    size_t tiles = (size_t)S->panels * S->ktiles;
    for (size_t t = 0; t < tiles; t++) {
        uint64_t bits = 0;
        for (int r = 0; r < 16; r++)
            bits += (uint64_t)__builtin_popcountll(akf_sparse_row_mask(S, t, r));
        if (S->tile_off[t + 1] < S->tile_off[t] || S->tile_off[t + 1] - S->tile_off[t] != bits) {
            snprintf(msg, len, "%s: tile %zu: offsets disagree with its masks", path, t);
            akf_sparse_free(S); S = NULL;
            goto out;
        }
    }
    if (S->tile_off[0] != 0 || S->tile_off[tiles] != S->nnz) {
        snprintf(msg, len, "%s: tile offsets do not cover the %llu values", path, (unsigned long long)S->nnz);
        akf_sparse_free(S); S = NULL;
        goto out;
    }
    akf_sparse_index(S);
    if (len) msg[0] = '\0';
out:
    fclose(f);
    return S;
}
