"""One run at a time per place it writes: an exclusive flock on a lock file there, so that a second run waits for the
first instead of mixing its files with the first's, and says for whom it waits (the file keeps its holder's pid). The
kernel drops the lock when the holder's file is closed or the holder exits, however it ends; the file itself stays
(unlinking it would let a waiter and a newcomer both hold "the" lock)."""

import fcntl
import os
from pathlib import Path


def hold(path: Path, waiting: str, log):
    """Open `path` and hold an exclusive lock on it; while another process holds it, log `waiting` once (its '{pid}'
    replaced by the holder's pid) and wait. Returns the open file: the lock lasts while it stays open. OSError if
    `path` cannot be opened for writing."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        log(waiting.replace("{pid}", handle.read().strip() or "unknown"))  # not format(): paths may hold braces
        fcntl.flock(handle, fcntl.LOCK_EX)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
