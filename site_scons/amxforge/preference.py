"""The host preference file the package selector reads (lines `PACKAGE VARIANT [VARIANT...]`, `*` for any package):
its one search order (toolchain/selector.toml, which the selector reads too, through a generated header), whether it
can be written, and replacing a package's line in it atomically."""

import os
import re
from functools import lru_cache
from pathlib import Path

from .errors import AmxforgeError
from .paths import toolchain_dir
from .tomlfile import load_toml


@lru_cache(maxsize=1)
def search_order() -> tuple:
    """The paths as toolchain/selector.toml writes them ({NAME}: an environment variable)."""
    return tuple(load_toml(toolchain_dir() / "selector.toml")["preference"])


def expand(pattern: str, environ=os.environ):
    """A search-order path with its variables filled in; None when one of them is unset or empty."""
    missing = False

    def value(m):
        nonlocal missing
        text = environ.get(m.group(1), "")
        missing = missing or not text
        return text
    path = re.sub(r"\{([A-Z_][A-Z0-9_]*)\}", value, pattern)
    return None if missing else Path(path)


def candidates(environ=os.environ) -> list:
    return [p for p in (expand(pattern, environ) for pattern in search_order()) if p is not None]


def preference_path(environ=os.environ) -> Path:
    """Where --save-preference writes: the first path of the search order whose variables are set."""
    found = candidates(environ)
    if not found:
        raise AmxforgeError("--save-preference: no place for the host preference file (AMXFORGE_PREFERENCE, "
                            "XDG_CONFIG_HOME and HOME are unset); set AMXFORGE_PREFERENCE=FILE")
    return found[0]


def read_path(environ=os.environ):
    """What the selector reads: the first path of the search order that exists (None: none does)."""
    return next((p for p in candidates(environ) if p.exists()), None)


def check_preference_writable() -> Path:
    """--save-preference is checked before the benchmark: the file must be a regular file (or absent) in a directory
    amxforge can make and write; one line naming it otherwise."""
    from . import atomic
    path = preference_path()
    try:
        if path.exists() or path.is_symlink():
            atomic.read_text(path)  # read again when the preference is saved
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.check_writable(path)
    except OSError as exc:
        raise AmxforgeError(f"--save-preference: the host preference file {path} cannot be written "
                            f"({atomic.why(exc)}); set AMXFORGE_PREFERENCE to a writable file, or leave "
                            f"--save-preference out") from None
    return path


def save_preference(lines: dict, note: str) -> Path:
    """Replace this run's packages' lines in the host preference file (the selector's format: PACKAGE VARIANT...),
    keeping every other line; written atomically."""
    from . import atomic
    path = check_preference_writable()
    kept = []
    if path.is_file():
        for line in atomic.read_text(path).splitlines():
            words = line.split()
            if words and not line.startswith("#") and words[0] in lines:
                continue
            kept.append(line)
    body = kept + [f"# {note}"] + [f"{pkg} {' '.join(order)}" for pkg, order in lines.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, "\n".join(body) + "\n")
    return path
