"""Shared test helpers: the repo root, fixture paths, running real commands, what this host can run (computed, never
assumed), and kernel builds in a temporary project (never the checkout's build/)."""

import atexit
import ctypes
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SITE = ROOT / "site_scons"
BIN = Path(sys.executable).parent
# The whole test session probes into its own cache, never the user's (subprocesses inherit it), removed at its end
# (left behind, each session's 60 MB piled up in /tmp).
os.environ["AMXFORGE_CACHE"] = tempfile.mkdtemp(prefix="amxforge-test-cache-")
atexit.register(shutil.rmtree, os.environ["AMXFORGE_CACHE"], True)

from amxforge.implementations import kernel_table  # noqa: E402  (after the cache is redirected)
from amxforge.probe import probe  # noqa: E402
from amxforge.probe.cpu import parse_cpuinfo  # noqa: E402

HOST_PROBE = probe()
HOST = set(parse_cpuinfo(Path("/proc/cpuinfo").read_text())["features"])
TABLE = kernel_table()
# Kernel variants the suite builds (every host compiles all three; which run here is computed below).
KERNEL_VARIANTS = ["baseline", "avx512", "amx"]
SLOW_DIRS = ("integration", "kernels", "faults")


def variant_runs_here(variant: str):
    """(True, None) or (False, why) from the probe: CPU features, XCR0 state and AMX permission of this host."""
    entry = HOST_PROBE["variants"][variant]
    return bool(entry["runnable"]), entry["why"]


def needs_variant(variant: str):
    """Skip unless this host can run `variant`'s binaries, with the probe's reason."""
    ok, why = variant_runs_here(variant)
    return pytest.mark.skipif(not ok, reason=f"variant {variant} cannot run on this host: {why}")


needs_amx = needs_variant("amx")


def pytest_collection_modifyitems(config, items):
    """The fast lane: `pytest -m "not slow"` runs the unit tests in seconds; builds and kernels are `slow`."""
    for item in items:
        if any(f"/tests/{d}/" in str(item.fspath) for d in SLOW_DIRS):
            item.add_marker(pytest.mark.slow)


def tool(name: str) -> str:
    """A console script of this environment (scons, amxforge), falling back to PATH."""
    found = BIN / name
    return str(found) if found.exists() else shutil.which(name)


def run(cmd, cwd=None, env=None, check=False, timeout=600):
    full_env = dict(os.environ, **(env or {}))
    res = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


def policy_root(tmp_path: Path) -> Path:
    """A copy of toolchain/ and templates/ to alter (AMXFORGE_ROOT points amxforge at it)."""
    root = Path(tmp_path) / "root"
    shutil.copytree(ROOT / "toolchain", root / "toolchain")
    shutil.copytree(ROOT / "templates", root / "templates")
    return root


def edit_isa_feature(root: Path, feature: str, field: str, line) -> None:
    """Replace the `field = ...` line of [features.FEATURE] in root's isa.toml by `line` (None: remove it)."""
    isa = root / "toolchain" / "isa.toml"
    text = isa.read_text()
    start = text.index(f"[features.{feature}]")
    old = next(x for x in text[start:].splitlines() if x.startswith(f"{field} = "))
    isa.write_text(text[:start] + text[start:].replace(old + "\n", "" if line is None else line + "\n", 1))


def killable_env(tmp_path: Path) -> dict:
    """The environment for a build a test kills with SIGKILL: its compilers' temporary files (gcc's ccXXXXXX.s, left
    behind by a killed gcc) go under the test's own directory, not /tmp (a suite run left a hundred there)."""
    tmp = Path(tmp_path) / "killed-tmp"
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp)}


def scons(project: Path, *args, env=None):
    return run([tool("scons"), "-Q", f"--site-dir={SITE}", *args], cwd=project, env=env)


def make_project(parent: Path, name="proj", fork=True) -> Path:
    """A project like the repo (SConstruct + kernels/, and the minifork fixture), built with the repo's site_scons."""
    project = Path(parent) / name
    project.mkdir(parents=True)
    shutil.copy(ROOT / "SConstruct", project)
    shutil.copytree(ROOT / "kernels", project / "kernels")
    if fork:
        shutil.copytree(FIXTURES / "minifork", project / "minifork")
    return project


@pytest.fixture(scope="session")
def minitree_copy(tmp_path_factory):
    """A fresh copy of the minitree fixture project per call."""
    def make(name="minitree"):
        dest = tmp_path_factory.mktemp(name) / "minitree"
        shutil.copytree(FIXTURES / "minitree", dest)
        return dest
    return make


@pytest.fixture(scope="session")
def kernel_project(tmp_path_factory):
    """A temporary copy of the repo's kernels, with each variant built once on first use: build(variant) -> project."""
    project = make_project(tmp_path_factory.mktemp("kernels"), fork=False)
    built = set()

    def build(variant):
        if variant not in built:
            res = scons(project, f"variant={variant}")
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
            built.add(variant)
        return project
    return build


@pytest.fixture(scope="session")
def library_for(kernel_project):
    """library_for(impl) -> (KernelLibrary, variant): the lowest kernel variant that compiles `impl` and runs here.
    Skips, naming the missing CPU features or OS support, where this host can run no build of it."""
    from amxforge.kernels import KernelLibrary

    cache = {}

    def get(impl):
        if impl not in cache:
            cache[impl] = None
            reasons = []
            for variant in KERNEL_VARIANTS:
                ok, why = variant_runs_here(variant)
                lib = KernelLibrary(variant, kernel_project(variant)) if ok else None
                if lib is not None and impl in lib.impls(runnable=True):
                    cache[impl] = (lib, variant)
                    break
                reasons.append(f"{variant}: {why}" if not ok else f"{variant}: not compiled in or not runnable")
            if cache[impl] is None:
                missing = sorted(set(TABLE[impl].needs) - HOST)
                cache[impl] = f"this CPU lacks {' '.join(missing)}" if missing else "; ".join(reasons)
        found = cache[impl]
        if isinstance(found, str):
            pytest.skip(f"no build of implementation {impl} runs on this host ({found})")
        return found
    return get


@pytest.fixture(scope="module")
def fork_project(tmp_path_factory):
    """A project with kernels and minifork built for baseline and avx512 (both compile on any host)."""
    project = make_project(tmp_path_factory.mktemp("faults"))
    for variant in ("baseline", "avx512"):
        res = scons(project, f"variant={variant}", "fork=minifork", "fork_targets=llama-bench,llama-cli")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return project


def at_a_guard_page(array, use):
    """use(a copy of `array` whose last byte is followed by a page no process may read: a read past it is SIGSEGV)."""
    page = mmap.PAGESIZE
    size = -(-array.nbytes // page) * page + page
    region = mmap.mmap(-1, size)
    anchor = ctypes.c_char.from_buffer(region)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(ctypes.addressof(anchor) + size - page), ctypes.c_size_t(page), 0) == 0
    del anchor
    view = np.frombuffer(region, dtype=array.dtype, count=array.size, offset=size - page - array.nbytes)
    view = view.reshape(array.shape)
    view[:] = array
    try:
        return use(view)
    finally:
        del view
        region.close()
