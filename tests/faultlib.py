"""Helpers for the fault-injection suite: small filesystems (full disk, read-only) as root, digests of outputs."""

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import pytest



@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of `size` at path (as root); skips with the reason where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (full-disk and read-only faults)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def digest_tree(root: Path, parts=("bin", "libexec", "lib", "fork", "policy.json", "compile_commands.json")) -> dict:
    """{relative path: sha256} of the outputs a failed build must leave exactly as they were."""
    out = {}
    for part in parts:
        p = root / part
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        for f in files:
            out[f.relative_to(root).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out
