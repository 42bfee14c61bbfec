"""Shared test helpers: the repo root, fixture paths, running real commands, and building variants once."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SITE = ROOT / "site_scons"
BIN = Path(sys.executable).parent


def host_flags() -> set:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


HOST = host_flags()
needs_amx = pytest.mark.skipif(not {"amx_tile", "amx_int8", "amx_bf16"} <= HOST, reason="host CPU has no AMX")
needs_avx512 = pytest.mark.skipif("avx512_bf16" not in HOST, reason="host CPU has no AVX512-BF16")


def tool(name: str) -> str:
    """A console script of this environment (scons, amxforge), falling back to PATH."""
    found = BIN / name
    return str(found) if found.exists() else shutil.which(name)


def run(cmd, cwd=None, env=None, check=False):
    full_env = dict(os.environ, **(env or {}))
    res = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test session probes into its own cache, never the user's."""
    monkeypatch.setenv("AMXFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def minitree_copy(tmp_path_factory):
    """A fresh copy of the minitree fixture project per call."""
    def make(name="minitree"):
        dest = tmp_path_factory.mktemp(name) / "minitree"
        shutil.copytree(FIXTURES / "minitree", dest)
        return dest
    return make


def scons(project: Path, *args, env=None):
    return run([tool("scons"), "-Q", f"--site-dir={SITE}", *args], cwd=project, env=env)


@pytest.fixture(scope="session")
def kernel_builds():
    """Build the repo's kernels for the variants this host can run (the README's main job does the same)."""
    built = {}

    def build(variant):
        if variant not in built:
            res = run([tool("scons"), "-Q", f"variant={variant}"], cwd=ROOT)
            assert res.returncode == 0, res.stdout + res.stderr
            built[variant] = ROOT / "build" / variant
        return built[variant]
    return build
