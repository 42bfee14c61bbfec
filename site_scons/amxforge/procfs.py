"""/proc as Linux writes it. /proc/PID/stat (and /proc/PID/task/TID/stat): the command name in parentheses, which may
itself hold spaces and parentheses, then space-separated fields; field numbers as proc(5) gives them. /proc/locks: a
line per lock, `N: FLOCK ADVISORY WRITE PID MAJOR:MINOR:INODE START END` (hex device numbers; waiters marked `->`)."""

import os
from pathlib import Path

STATE, UTIME, STIME, PROCESSOR = 3, 14, 15, 39


def stat(path) -> tuple:
    """(command name, {field number: text}) of a stat file; OSError when it is gone, ValueError when malformed."""
    text = Path(path).read_text()
    close = text.rindex(")")
    return text[text.index("(") + 1:close], dict(enumerate(text[close + 2:].split(), start=STATE))


def flock_holder(fd: int):
    """The pid of the process holding a flock on the file open at `fd` (from /proc/locks), or None (no holder now,
    or /proc/locks unreadable)."""
    st = os.fstat(fd)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where and fields[4].isdigit():
            return int(fields[4])
    return None
