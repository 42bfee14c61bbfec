"""The probe's cache: one JSON file keyed on everything that can change the answer. Computing the key must stay
cheap (a warm `amxforge probe --json` has a 150 ms budget): stats and small reads, no subprocess, no heavy import."""

import glob
import hashlib
import json
import os
import shutil

from .. import __version__
from ..paths import cache_dir, toolchain_dir

TOOLS = ("gcc", "g++", "clang", "clang++", "nvcc", "nvidia-smi", "objdump")


def _stat(path):
    try:
        st = os.stat(path)
        return [path, st.st_mtime_ns, st.st_size]
    except OSError:
        return [path, None, None]


def cache_key(cpu_identity: str) -> str:
    uname = os.uname()
    parts = {
        "amxforge": __version__,
        "cpu": cpu_identity,
        "kernel": [uname.release, uname.version],
        "tools": [_stat(shutil.which(t)) if shutil.which(t) else [t, None, None] for t in TOOLS],
        "cc": os.environ.get("CC"),
        "cc_binary": _stat(shutil.which(os.environ["CC"])) if os.environ.get("CC") and shutil.which(os.environ["CC"])
        else None,
        "libcuda": [_stat(p) for p in sorted(glob.glob("/usr/lib*/**/libcuda.so.1", recursive=False))],
        "gpus": sorted(glob.glob("/dev/nvidia[0-9]*")),
        "toolchain": [_stat(str(p)) for p in sorted(toolchain_dir().glob("*.toml"))],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


RESULT_KEYS = {"cpu", "os", "cuda", "compilers", "variants"}


def cache_file(cpuinfo: str = None):
    """probe.json for this host; probe-<hash>.json for a saved cpuinfo of another machine."""
    if not cpuinfo:
        return cache_dir() / "probe.json"
    return cache_dir() / f"probe-{hashlib.sha256(os.path.abspath(cpuinfo).encode()).hexdigest()[:12]}.json"


def load(key: str, cpuinfo: str = None):
    """The cached result for this key, or None: a missing, damaged or foreign-shaped cache is a miss (and is
    rewritten by the probe that follows), never an error."""
    from ..atomic import read_text
    try:
        data = json.loads(read_text(cache_file(cpuinfo)))
    except (OSError, ValueError):  # a FIFO or anything else where the cache was is a miss too
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    result = data.get("result")
    if not isinstance(result, dict) or not RESULT_KEYS <= set(result):
        return None
    return result


def store(key: str, result: dict, cpuinfo: str = None) -> None:
    from ..atomic import write_text

    path = cache_file(cpuinfo)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"key": key, "result": result}))  # never a half-written cache
    except OSError:
        pass  # a read-only or full home: probing still works, only slower
