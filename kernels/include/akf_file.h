/* Reading files amxforge's binaries did not write themselves (class `portable`: the launcher links it too). */
#ifndef AKF_FILE_H
#define AKF_FILE_H

#include <stddef.h>
#include <stdio.h>

/* fopen(path, "rb") for a regular file only: a FIFO, a device or a directory is refused at once (opening never
 * waits for a FIFO's writer). Returns NULL with the reason in msg (naming path); *size gets the file's size. */
FILE *akf_open_regular(const char *path, long long *size, char *msg, size_t len);

#endif
