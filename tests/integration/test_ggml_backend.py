"""fork_kernels=amxforge on a tree with ggml's backend registry: libggml-amxforge.so, built against the tree's own
headers and loaded by its loader. Real CMake/ninja builds of tests/fixtures/miniggml (a fixture tree of our own that
declares ggml's backend interface, with a test-backend-ops checking MUL_MAT against a float64 reference), for
baseline and the best variant this host runs; every implementation the host runs through the backend; the record,
the audit, the tree left clean; a host whose kernel refuses AMX, and trees that lack what the backend needs."""

import json
import os
import shutil
import subprocess

import pytest

from amxforge.kernels import KernelLibrary
from conftest import FIXTURES, KERNEL_VARIANTS, make_project, run, scons, tool, variant_runs_here

RUNNABLE = [v for v in KERNEL_VARIANTS if variant_runs_here(v)[0]]
TOP = RUNNABLE[-1]
VARIANTS = sorted({"baseline", TOP})
TREE = "ggml tree's copy"  # a space and a quote on the way to CMake, the compiler and the loader


def git(tree, *args):
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("backend"), fork=False)
    tree = project / TREE
    shutil.copytree(FIXTURES / "miniggml", tree)
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fixture")
    for variant in VARIANTS:
        res = scons(project, f"variant={variant}", f"fork={TREE}", "fork_kernels=amxforge")
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return project


def backend_ops(project, variant, env=None, program="bin"):
    lib = project / "build" / variant / "lib" / "libggml-amxforge.so"
    return run([str(project / "build" / variant / program / "test-backend-ops"), "-b", "AMXFORGE", "-o", "MUL_MAT"],
               env={**os.environ, "GGML_BACKEND_PATH": str(lib), **(env or {})})


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_backend_is_built_recorded_and_passes_the_trees_own_test(built, variant):
    kernels = json.loads((built / "build" / variant / "fork" / "amxforge-build.json").read_text())["kernels"]
    assert kernels["choice"] == "amxforge" and kernels["route"] == "backend", kernels
    assert kernels["library"] == f"build/{variant}/lib/libggml-amxforge.so"
    best = KernelLibrary(variant, built).impls(runnable=True)[-1]
    res = backend_ops(built, variant, {"AMXFORGE_KERNELS_STATS": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"implementation {best} (variant {variant})" in res.stdout and "8/8 tests passed" in res.stdout, res.stdout
    assert "type_a=f16" in res.stdout and "not supported [AMXFORGE]" in res.stdout  # declined, so the CPU keeps it
    # through our handler: dense and sparse (the pruned cases), each weight tensor packed again after it was rewritten
    assert "taken: dense 301x9 (K 259)" in res.stderr and "taken: sparse 64x40 (K 300)" in res.stderr, res.stderr


def test_every_implementation_here_passes(built):
    for impl in KernelLibrary(TOP, built).impls(runnable=True):
        res = backend_ops(built, TOP, {"AMXFORGE_KERNELS_IMPL": impl, "AMXFORGE_KERNELS_STATS": "1"})
        assert res.returncode == 0 and "8/8 tests passed" in res.stdout, (impl, res.stdout + res.stderr)
        assert f"implementation {impl} (variant {TOP})" in res.stderr, res.stderr


def test_where_the_handler_declines_the_backend_computes_it_in_plain_c(built):
    """AMXFORGE_KERNELS=fork makes the handler decline every call (as a tensor too large to pack does): the backend,
    which has said it takes the op, computes it with its plain C fallback, still within the bound."""
    res = backend_ops(built, TOP, {"AMXFORGE_KERNELS": "fork", "AMXFORGE_KERNELS_STATS": "1"})
    assert res.returncode == 0 and "8/8 tests passed" in res.stdout, res.stdout + res.stderr
    assert "fell back (AMXFORGE_KERNELS=fork) 301x9 (K 259)" in res.stderr, res.stderr


def test_the_launcher_points_the_loader_at_its_variants_library_unless_the_caller_did(built):
    """bin/test-backend-ops without GGML_BACKEND_PATH: the launcher sets it to the variant's own library (said with
    AMXFORGE_EXPLAIN=1); one the caller set (here the baseline build's) is kept."""
    env = {k: v for k, v in os.environ.items() if k != "GGML_BACKEND_PATH"}
    res = run([str(built / "build" / TOP / "bin" / "test-backend-ops"), "-b", "AMXFORGE", "-o", "MUL_MAT"],
              env={**env, "AMXFORGE_EXPLAIN": "1"})
    assert res.returncode == 0 and "8/8 tests passed" in res.stdout, res.stdout + res.stderr
    assert f"GGML_BACKEND_PATH={built / 'build' / TOP}/./lib/libggml-amxforge.so" in res.stderr, res.stderr
    assert f"(variant {TOP})" in res.stdout
    theirs = built / "build" / "baseline" / "lib" / "libggml-amxforge.so"
    res = run([str(built / "build" / TOP / "bin" / "test-backend-ops"), "-b", "AMXFORGE"],
              env={**env, "GGML_BACKEND_PATH": str(theirs)})
    assert res.returncode == 0 and "(variant baseline)" in res.stdout, res.stdout + res.stderr


def test_a_package_runs_the_backend_of_the_variant_its_selector_picks(built, tmp_path):
    res = run([tool("amxforge"), "package", "--variants", ",".join(VARIANTS), "--fork", str(built / TREE),
               "--fork-kernels", "amxforge", "--out", str(tmp_path / "rel"), "--project", str(built)])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "GGML_BACKEND_PATH"}
    for forced in VARIANTS:
        res = run([str(tmp_path / "rel" / "bin" / "test-backend-ops"), "-b", "AMXFORGE", "-o", "MUL_MAT"],
                  env={**env, "AMXFORGE_VARIANT": forced})
        assert res.returncode == 0 and "8/8 tests passed" in res.stdout, res.stdout + res.stderr
        assert f"(variant {forced})" in res.stdout, res.stdout
    res = run([str(tmp_path / "rel" / "bin" / "test-backend-ops"), "-b", "AMXFORGE"], env=env)
    assert res.returncode == 0 and f"(variant {TOP})" in res.stdout, res.stdout + res.stderr


def test_the_tree_stays_clean_the_audit_passes_and_the_build_is_up_to_date(built):
    assert git(built / TREE, "status", "--porcelain") == ""
    res = run([tool("amxforge"), "audit", "--variant", TOP], cwd=built)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = scons(built, f"variant={TOP}", f"fork={TREE}", "fork_kernels=amxforge", "-q")
    assert res.returncode == 0, res.stdout + res.stderr


def test_where_the_kernel_refuses_amx_the_loader_skips_the_library(built, tmp_path):
    """The library's score is the guard's answer: under a seccomp filter that makes arch_prctl refuse AMX (the real
    refusal, not a simulation), the amx build scores 0 and ggml's loader does not load it."""
    if TOP != "amx":
        pytest.skip(f"this host does not run the amx variant (best here: {TOP})")
    deny = tmp_path / "deny_amx_permission"
    run(["gcc", "-O2", "-o", str(deny), str(FIXTURES / "deny_amx_permission" / "deny_amx_permission.c")], check=True)
    lib = built / "build" / "amx" / "lib" / "libggml-amxforge.so"
    res = run([str(deny), str(built / "build" / "amx" / "libexec" / "test-backend-ops"), "-b", "AMXFORGE"],
              env={**os.environ, "GGML_BACKEND_PATH": str(lib)})
    assert res.returncode == 2 and "backend not supported on this system" in res.stderr, res.stdout + res.stderr


@pytest.mark.parametrize("edit,expect", [
    (("include/ggml-backend.h", "ggml_backend_load(const char *path);", "ggml_backend_open(const char *path);"),
     "does not declare ggml_backend_load in"),
    (("src/ggml-backend-impl.h", None, None), "has no src/ggml-backend-impl.h (the backend interface"),
])
def test_a_tree_without_what_the_backend_needs_is_one_line(tmp_path, edit, expect):
    project = make_project(tmp_path, fork=False)
    tree = project / "miniggml"
    shutil.copytree(FIXTURES / "miniggml", tree)
    path, old, new = edit
    if old is None:
        (tree / path).unlink()
    else:
        (tree / path).write_text((tree / path).read_text().replace(old, new))
    res = scons(project, "variant=baseline", "fork=miniggml", "fork_kernels=amxforge")
    assert res.returncode == 2 and expect in res.stderr and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert len([line for line in res.stderr.splitlines() if line.strip()]) == 1, res.stderr
    assert not (project / "build" / "baseline" / "fork" / "amxforge-build.json").exists()
