"""One run at a time per place it writes: an exclusive flock on a lock file there, so that a second run waits for the
first instead of mixing its files with the first's, and says for whom it waits (the holder's pid, from /proc/locks:
a pid the holder wrote into the file could be read before it was written, or be an earlier holder's). The kernel
drops the lock when the holder's file is closed or the holder exits, however it ends; the file itself stays
(unlinking it would let a waiter and a newcomer both hold "the" lock)."""

import fcntl
import time
from pathlib import Path

from .procfs import flock_holder

_held = {}  # resolved lock path -> its open file, for the locks held until the process exits


def hold(path: Path, waiting, log):
    """Open `path` and hold an exclusive lock on it; while another process holds it, log `waiting(pid)` once (the
    holder's pid, or 'unknown') and wait. Returns the open file: the lock lasts while it stays open. OSError if
    `path` cannot be opened for writing."""
    handle = open(path, "a+")
    for _ in range(20):  # the holder may let go between our try and our look at /proc/locks: try again
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            holder = flock_holder(handle.fileno())
        if holder is not None:
            break
        time.sleep(0.05)
    log(waiting(holder or "unknown"))
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def hold_for_life(path: Path, waiting, log) -> None:
    """hold(), the lock kept until this process exits (a build, a benchmark whose outputs are written after the code
    that took it returns); taking the same lock again in this process is a no-op."""
    key = str(Path(path).resolve())
    if key not in _held:
        _held[key] = hold(path, waiting, log)
