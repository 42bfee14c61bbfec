/* The selector's parts beside launch.c (class `portable`: any x86-64 CPU). Declarations only. */
#ifndef AKF_SELECTOR_H
#define AKF_SELECTOR_H

#include <stddef.h>
#include <stdio.h>

/* What a CUDA variant needs of this host: a device whose compute capability one of its SASS targets covers (same
 * major, equal or higher minor; an "a" target only its exact capability), or its PTX target can be JIT-compiled for
 * (an equal or higher capability; "a" exactly), and a driver at least as new as the toolkit it was built with
 * (cuDriverGetVersion's number: 1000 * major + 10 * minor). */
struct akf_gpu_need {
    char sass[256]; /* comma-separated: 86,90,120a */
    char ptx[16];   /* one target, or "" */
    int driver;
};

/* AKF_OK when a visible device and the driver can run the variant; otherwise AKF_ERR_CPU with the reason in msg.
 * The driver is asked once per process, through dlopen("libcuda.so.1") (no link dependency); CUDA_VISIBLE_DEVICES is
 * honoured by the driver itself. AMXFORGE_GUARD_CUDA (tests) replaces the driver: "none" (libcuda cannot be loaded),
 * or "driver=13000;devices=9.0,12.0" (a driver version and the visible devices' capabilities). */
int akf_gpu_check(const char *variant, const struct akf_gpu_need *need, char *msg, size_t len);

/* One line on out: the driver's version and the visible devices (for AMXFORGE_EXPLAIN). */
void akf_gpu_describe(FILE *out, const char *prog);

/* The verification stamp of a release's chosen variant: after its files were checked in full (size and CRC-32), the
 * (device, inode, size, mtime, ctime) of each is recorded under the user's cache; a later start whose stats all match
 * skips the CRC. key names the release and variant; paths are the files, absolute. akf_stamp_matches returns 1 when
 * the stamp is there and every file's stat still matches it. */
int akf_stamp_matches(const char *key, char *const *paths, int n);
void akf_stamp_write(const char *key, char *const *paths, int n);

#endif
