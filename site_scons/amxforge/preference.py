"""The host preference file the package selector reads (lines `PACKAGE VARIANT [VARIANT...]`, `*` for any package):
where it is, whether it can be written, and replacing a package's line in it atomically."""

import os
from pathlib import Path

from .errors import AmxforgeError


def preference_path() -> Path:
    env = os.environ.get("AMXFORGE_PREFERENCE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "amxforge" / "preference"


def check_preference_writable() -> Path:
    """--save-preference is checked before the benchmark: the file must be a regular file (or absent) in a directory
    amxforge can make and write; one line naming it otherwise."""
    import tempfile

    from . import atomic
    path = preference_path()
    try:
        if path.exists() or path.is_symlink():
            atomic.read_text(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
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
