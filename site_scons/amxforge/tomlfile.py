"""Read toolchain/*.toml with errors that name the file and line."""

import tomllib
from pathlib import Path

from .errors import AmxforgeError


def load_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise AmxforgeError(f"{path}: missing; restore it from git (git checkout -- {path.name})") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)"
        raise AmxforgeError(f"{path}: malformed TOML: {exc}; fix that line") from None
