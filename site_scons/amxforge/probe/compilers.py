"""Compilers: path, family, version, and which ISA flags each accepts (a compile test per flag)."""

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

from ..errors import AmxforgeError
from ..policy.isa import Compiler

NAMES = ("gcc", "g++", "clang", "clang++")


@lru_cache(maxsize=None)
def identify(command: str) -> Compiler:
    """Family and version of a compiler command (gcc: -dumpfullversion; clang: -dumpversion)."""
    path = shutil.which(command)
    if not path:
        raise AmxforgeError(f"compiler {command!r} not found on PATH; install it or pass CC=/path/to/compiler")
    try:
        banner = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
        family = "clang" if "clang" in banner.lower() else "gcc"
        option = "-dumpfullversion" if family == "gcc" else "-dumpversion"
        version = subprocess.run([path, option], capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError as exc:
        raise AmxforgeError(f"compiler {path} does not run ({exc}); pass CC=/path/to/a/working/compiler") from None
    if not version or not version[0].isdigit():
        raise AmxforgeError(f"cannot read the version of {path}; pass CC= a gcc or clang")
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


def accepted_flags(compiler_path: str, flags) -> dict:
    """{flag: accepted} by compiling an empty C unit with each flag (in parallel; the probe caches it)."""
    flags = sorted(set(flags))
    with tempfile.TemporaryDirectory(prefix="amxforge-flagtest-") as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as handle:
            handle.write("int amxforge_flag_test;\n")

        def test(flag):
            out = os.path.join(tmp, f"t{abs(hash(flag))}.o")
            res = subprocess.run([compiler_path, "-Werror", flag, "-c", src, "-o", out],
                                 capture_output=True, timeout=60)
            return flag, res.returncode == 0

        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            return dict(pool.map(test, flags))
