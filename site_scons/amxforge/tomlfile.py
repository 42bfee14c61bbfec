"""Read toolchain/*.toml with errors that name the file and line."""

import tomllib
from pathlib import Path

from .errors import AmxforgeError


def load_toml(path: Path) -> dict:
    from .atomic import NotRegular, read_bytes
    try:
        return tomllib.loads(read_bytes(path).decode())
    except FileNotFoundError:
        raise AmxforgeError(f"{path}: missing; restore it from git (git checkout -- {path.name})") from None
    except NotRegular as exc:
        raise AmxforgeError(f"{exc.strerror}; restore it from git (git checkout -- {path.name})") from None
    except UnicodeDecodeError as exc:
        raise AmxforgeError(f"{path}: not UTF-8 text ({exc.reason}); restore it from git") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)"
        raise AmxforgeError(f"{path}: malformed TOML: {exc}; fix that line") from None
