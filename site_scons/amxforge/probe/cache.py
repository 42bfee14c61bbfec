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
        "libcuda": [_stat(p) for p in sorted(glob.glob("/usr/lib*/**/libcuda.so.1", recursive=False))],
        "gpus": sorted(glob.glob("/dev/nvidia[0-9]*")),
        "toolchain": [_stat(str(p)) for p in sorted(toolchain_dir().glob("*.toml"))],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_file():
    return cache_dir() / "probe.json"


def load(key: str):
    try:
        with open(cache_file()) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data.get("result") if data.get("key") == key else None


def store(key: str, result: dict) -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "result": result}))
        os.replace(tmp, path)  # never a half-written cache
    except OSError:
        pass  # a read-only home: probing still works, only slower
