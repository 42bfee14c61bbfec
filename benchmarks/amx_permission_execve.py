#!/usr/bin/env python3
"""Does Linux's AMX permission (arch_prctl ARCH_REQ_XCOMP_PERM) survive execve? The launcher asks for it before it
execs the real binary; this says whether the real binary inherits it or must ask again (ggml and our kernels do).

    python benchmarks/amx_permission_execve.py

Compiles a small C program that asks for the permission, reads ARCH_GET_XCOMP_PERM, then (1) forks and reads it in
the child, (2) execs itself and reads it in the new image. Prints one JSON line. Needs a CPU and kernel with AMX.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

PROGRAM = r"""
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
static int tiledata(void) {
    uint64_t perm = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &perm)) return -1;
    return (int)((perm >> 18) & 1);
}
int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "exec")) { printf("%d\n", tiledata()); return 0; }
    int before = tiledata();
    long rc = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, 18);
    int after = tiledata();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) { printf("fork %d\n", tiledata()); fflush(stdout); _exit(0); }
    waitpid(pid, NULL, 0);
    printf("self %d %ld %d\n", before, rc, after);
    fflush(stdout);
    execl("/proc/self/exe", argv[0], "exec", (char *)NULL);
    return 1;
}
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp, "perm.c"), Path(tmp, "perm")
        src.write_text(PROGRAM)
        subprocess.run(["gcc", "-O2", str(src), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    fork_child = int(out[out.index("fork") + 1])
    before, rc, after = int(out[out.index("self") + 1]), int(out[out.index("self") + 2]), int(out[out.index("self") + 3])
    exec_image = int(out[-1])
    print(json.dumps({"before_request": before, "request_rc": rc, "after_request": after,
                      "inherited_by_fork": fork_child == 1, "kept_across_execve": exec_image == 1}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
