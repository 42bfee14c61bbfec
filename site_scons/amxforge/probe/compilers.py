"""Compilers: path, family, version, and which ISA flags each accepts (a compile test per flag)."""

import shutil
import subprocess
from functools import lru_cache

from ..atomic import why
from ..errors import AmxforgeError
from ..policy.isa import Compiler

NAMES = ("gcc", "g++", "clang", "clang++")


@lru_cache(maxsize=None)
def identify(command: str, var: str = "CC") -> Compiler:
    """Family and version of a compiler command (gcc: -dumpfullversion; clang: -dumpversion); `var` is the variable
    that named it (CC or CXX), which the fix names."""
    path = shutil.which(command)
    if not path:
        raise AmxforgeError(f"compiler {command!r} ({var}) not found on PATH; install it or pass {var}=/path/to/it")
    try:
        banner = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
        family = "clang" if "clang" in banner.lower() else "gcc"
        option = "-dumpfullversion" if family == "gcc" else "-dumpversion"
        version = subprocess.run([path, option], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = why(exc) if isinstance(exc, OSError) else f"no answer in {exc.timeout:g} s"
        raise AmxforgeError(f"compiler {path} ({var}) does not run ({reason}); pass {var}=/path/to/a/working/"
                            f"compiler") from None
    if not version or not version[0].isdigit():
        raise AmxforgeError(f"cannot read the version of {path} ({var}); pass {var}= a gcc or clang"
                            f"{'++' if var == 'CXX' else ''}")
    return Compiler(family, version, path)


def probe_compilers() -> list:
    found = []
    for name in NAMES:
        if shutil.which(name):
            try:
                comp = identify(name)
            except AmxforgeError:
                continue
            found.append({"name": name, "path": comp.path, "family": comp.family, "version": comp.version})
    return found
