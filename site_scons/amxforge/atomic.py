"""Every file amxforge writes goes through here: a temporary file in the same directory, flushed to disk, then
renamed over the target. A reader sees the old file or the new one, never half of one; a full disk or a kill
leaves the old file (and at most a stray *.tmp that the next write replaces).

And every file amxforge reads has a shape: `open_regular` opens without waiting (a FIFO or a device where a file
was opens at once instead of blocking for a writer that never comes) and refuses what is not a regular file, naming
it; `read_text` and `read_bytes` stop at a size cap."""

import hashlib
import json
import os
import stat
import zlib
import tempfile
from pathlib import Path

READ_CAP = 256 << 20  # no record, table, cache or log amxforge reads is near this; a bigger one is not ours


class NotRegular(OSError):
    """The path exists but is a FIFO, a device, a socket or a directory: amxforge reads regular files only."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path, mode: str = "rb"):
    """`path` opened for reading if it is a regular file; NotRegular (an OSError naming what it is) otherwise, at
    once. FileNotFoundError and other OSErrors as open() raises them."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(0, f"{path} is {_kind(st.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, **({} if "b" in mode else {"errors": "replace"}))
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path, cap: int = READ_CAP) -> bytes:
    with open_regular(path) as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise NotRegular(0, f"{path} is larger than {cap} bytes: not a file amxforge wrote or reads")
    return data


def read_text(path, cap: int = READ_CAP) -> str:
    return read_bytes(path, cap).decode(errors="replace")


def why(exc: Exception) -> str:
    """An exception as the end of a one-line message: an OSError's reason in words, without its errno and path."""
    return getattr(exc, "strerror", None) or str(exc)

from .errors import AmxforgeError


def write_bytes(path, data: bytes, mode: int = 0o644) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def check_writable(path) -> None:
    """Before long work whose result goes to `path`: OSError unless write_bytes can put a file there, i.e. `path` is
    absent or a regular file (NotRegular naming what it is otherwise) in a directory where a file can be made."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise NotRegular(0, f"it is {_kind(st.st_mode)}, not a regular file")  # the caller names the path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".check")
    os.close(fd)
    os.unlink(tmp)


def require_writable(path, option: str, give: str) -> None:
    """check_writable as one line: `option path: cannot be written (why); give GIVE`."""
    try:
        check_writable(path)
    except OSError as exc:
        raise AmxforgeError(f"{option} {path}: cannot be written ({why(exc)}); give {give}") from None


def write_text(path, text: str, mode: int = 0o644) -> Path:
    return write_bytes(path, text.encode(), mode)


def write_json(path, data, indent=2) -> Path:
    return write_text(path, json.dumps(data, indent=indent, sort_keys=True) + "\n")


def read_json(path, what: str, expect=dict, fix: str = "it is rewritten by the next build"):
    """A JSON record amxforge wrote, validated as `expect` (dict or list); AmxforgeError naming the file if not."""
    path = Path(path)
    try:
        data = json.loads(read_text(path))
    except FileNotFoundError:
        raise
    except NotRegular as exc:
        raise AmxforgeError(f"{exc.strerror}; {fix}") from None
    except (OSError, ValueError) as exc:
        raise AmxforgeError(f"{path}: damaged {what} ({exc.__class__.__name__}: {exc}); {fix}") from None
    if not isinstance(data, expect):
        raise AmxforgeError(f"{path}: damaged {what} (a JSON {type(data).__name__}, not a {expect.__name__}); {fix}")
    return data


def file_sha256(path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks (records, ledgers and manifests)."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_crc32(path) -> str:
    """zlib's CRC-32 of a file as 8 hex digits: what the selector (kernels/launcher/launch.c) checks at every start."""
    crc = 0
    with open_regular(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"
