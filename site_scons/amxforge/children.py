"""Programs amxforge starts and reads while they run (kbench, a fork's benchmark, objdump): none outlives an amxforge
that is interrupted (Ctrl-C or SIGTERM to amxforge alone: `kill`, a supervisor, a CI runner's timeout) or fails
while reading them; a benchmark left running would load the host for whatever measures next."""

import contextlib
import subprocess


@contextlib.contextmanager
def reaped(proc: subprocess.Popen):
    """`proc`, killed and waited for where the block is left by an exception: nothing it was doing is worth
    finishing once amxforge no longer reads it (a build's ninja, which must stop its compilers, has its own stop)."""
    try:
        yield proc
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
