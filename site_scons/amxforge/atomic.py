"""Every file amxforge writes goes through here: a temporary file in the same directory, flushed to disk, then
renamed over the target. A reader sees the old file or the new one, never half of one; a full disk or a kill
leaves the old file (and at most a stray *.tmp that the next write replaces)."""

import hashlib
import json
import os
import zlib
import tempfile
from pathlib import Path

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


def write_text(path, text: str, mode: int = 0o644) -> Path:
    return write_bytes(path, text.encode(), mode)


def write_json(path, data, indent=2) -> Path:
    return write_text(path, json.dumps(data, indent=indent, sort_keys=True) + "\n")


def read_json(path, what: str, expect=dict, fix: str = "it is rewritten by the next build"):
    """A JSON record amxforge wrote, validated as `expect` (dict or list); AmxforgeError naming the file if not."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise AmxforgeError(f"{path}: damaged {what} ({exc.__class__.__name__}: {exc}); {fix}") from None
    if not isinstance(data, expect):
        raise AmxforgeError(f"{path}: damaged {what} (a JSON {type(data).__name__}, not a {expect.__name__}); {fix}")
    return data


def file_sha256(path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks (records, ledgers and manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_crc32(path) -> str:
    """zlib's CRC-32 of a file as 8 hex digits: what the selector (kernels/launcher/launch.c) checks at every start."""
    crc = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"
