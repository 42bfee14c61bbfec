"""fork_kernels=amxforge: our kernels inside the fork's binaries through the linker's --wrap of its matmul entry, the
fork's tree untouched. Real CMake/ninja builds of tests/fixtures/minifork (a git checkout copy, so its status can be
checked), real runs of its MUL_MAT tool against a float64 reference and against the fork's own kernels, for every
implementation this host runs; the proof in the record, relinking when our archive changes, and the bad inputs."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from amxforge.kernels import from_bf16, to_bf16
from conftest import FIXTURES, HOST, KERNEL_VARIANTS, TABLE, make_project, run, scons, tool, variant_runs_here

TARGETS = "fork_targets=minifork-matmul,llama-bench"
RUNNABLE = [v for v in KERNEL_VARIANTS if variant_runs_here(v)[0]]
TOP = RUNNABLE[-1]  # the highest kernel variant this host runs (baseline runs on every x86-64-v3 host)


def git(tree, *args):
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    """A project whose minifork is a git checkout, built with our kernels for baseline and the top variant."""
    project = make_project(tmp_path_factory.mktemp("hook"), fork=False)
    tree = project / "minifork"
    shutil.copytree(FIXTURES / "minifork", tree)
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fixture")
    for variant in sorted({"baseline", TOP}):
        res = scons(project, f"variant={variant}", "fork=minifork", TARGETS, "fork_kernels=amxforge")
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return project


def record(project, variant):
    return json.loads((project / "build" / variant / "fork" / "amxforge-build.json").read_text())


# AMXFORGE_KERNELS_STATS=1's line of a team's per-thread times (3 threads, as the tests below run)
TEAM_LINE = (r"amxforge-kernels: {what}, 3 threads: min \d+\.\d{{3}} ms \(thread [0-2]\), mean \d+\.\d{{3}} ms, "
             r"max \d+\.\d{{3}} ms \(thread [0-2]\)\n")


def matmul(project, variant, tmp_path, nx, ny, k, threads, env=None, sparsity=0.0, seed=0):
    """minifork-matmul through the installed launcher; returns (C, float64 reference, bound, stderr)."""
    rng = np.random.default_rng(seed)
    W = to_bf16(rng.standard_normal((nx, k)).astype(np.float32) * (rng.random((nx, k)) >= sparsity))
    B = rng.standard_normal((ny, k)).astype(np.float32)
    paths = [tmp_path / n for n in ("W.bin", "B.bin", "C.bin")]
    W.tofile(paths[0])
    B.tofile(paths[1])
    res = run([str(project / "build" / variant / "bin" / "minifork-matmul"), str(paths[0]), str(paths[1]), str(nx),
               str(ny), str(k), str(threads), str(paths[2])], env={**os.environ, **(env or {})})
    assert res.returncode == 0, res.stdout + res.stderr
    C = np.fromfile(paths[2], dtype=np.float32).reshape(ny, nx).astype(np.float64)
    Bq, Wf = from_bf16(to_bf16(B)).astype(np.float64), from_bf16(W).astype(np.float64)
    # both sides round the activations to bf16 and sum in fp32: each within K * eps32 * (|B| @ |W|^T) of the exact
    bound = 1e-30 + (k + 2) * np.finfo(np.float32).eps * (np.abs(Bq) @ np.abs(Wf).T)
    return C, Bq @ Wf.T, bound, res.stderr


def test_the_entry_is_wrapped_and_proven_and_the_tree_stays_clean(hooked):
    for variant in sorted({"baseline", TOP}):
        kernels = record(hooked, variant)["kernels"]
        assert kernels["choice"] == "amxforge" and kernels["route"] == "link-wrap"
        assert kernels["proven"] == {f"build/{variant}/lib/libggml.so": ["iqk_mul_mat_4d"]}
        live = next((hooked / "build" / variant).glob("fork-work/*/ledger.live.jsonl"))
        links = [json.loads(line) for line in live.read_text().splitlines() if '"mode": "link"' in line]
        wrapped = [e for e in links if e.get("wrapped")]
        assert wrapped and all("-Wl,--wrap=iqk_mul_mat_4d" in e["command"] for e in wrapped)
    assert git(hooked / "minifork", "status", "--porcelain") == ""  # built out of tree, nothing of it changed
    # the units keep the class policy: the audit of the fork's objects (and ours) is clean
    res = run([tool("amxforge"), "audit", "--variant", TOP], cwd=hooked)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = scons(hooked, f"variant={TOP}", "fork=minifork", TARGETS, "fork_kernels=amxforge", "-q")
    assert res.returncode == 0, res.stdout + res.stderr  # up to date


@pytest.mark.parametrize("impl", TABLE.names)
@pytest.mark.parametrize("sparsity", [0.0, 0.7], ids=["dense", "pruned70"])
def test_every_implementation_here_matches_the_reference_and_the_forks_own(hooked, tmp_path, impl, sparsity):
    variant = next((v for v in ("baseline", TOP) if impl in _impls(hooked, v)), None)
    if variant is None:
        pytest.skip(f"no build of {impl} runs here (this CPU lacks "
                    f"{' '.join(sorted(set(TABLE[impl].needs) - HOST)) or 'a permission'})")
    env = {"AMXFORGE_KERNELS_STATS": "1", "AMXFORGE_KERNELS_IMPL": impl}
    ours, ref, bound, stderr = matmul(hooked, variant, tmp_path, 301, 9, 259, 3, env, sparsity)
    form = "sparse" if sparsity else "dense"
    # declined with f32 activations, taken with those the team rounded to bf16 once (typeB 30), as ik's mul_mat runs
    assert f"implementation {impl} (variant {variant})" in stderr, stderr
    assert f"taken: {form} 301x9 (K 259) typeA 30 typeB 30: 1 calls" in stderr and "typeB 0" not in stderr, stderr
    assert re.search(TEAM_LINE.format(what=r"time computing the calls taken, per thread \(packing excluded\)"), stderr)
    assert "for the calls that fell back" not in stderr, stderr  # the fork's own function ran nothing
    assert np.all(np.abs(ours - ref) <= bound)
    own, _, _, stderr = matmul(hooked, variant, tmp_path, 301, 9, 259, 3, {**env, "AMXFORGE_KERNELS": "fork"},
                               sparsity)
    # the fork's own function computed it, and thread 0's time in it is reported beside ours
    assert re.search(r"fell back \(AMXFORGE_KERNELS=fork\) 301x9 \(K 259\) typeA 30 typeB 0: 1 calls, \d+\.\d{3} ms "
                     r"in thread 0 in the fork's own function\n", stderr), stderr
    assert re.search(r"thread 0 in the matmuls: 0\.000 ms in ours \(and 0\.000 ms finding and packing tensors\), "
                     r"\d+\.\d{3} ms in the fork's own function", stderr), stderr
    # every thread's time in it: the fork's team balance, printed as ours is
    what = r"time in the fork's own function for the calls that fell back, per thread"
    assert re.search(TEAM_LINE.format(what=what), stderr) and "calls taken, per thread" not in stderr, stderr
    assert np.all(np.abs(ours - own) <= 2 * bound)  # each within the bound of the exact result


def _impls(project, variant):
    from amxforge.kernels import KernelLibrary
    return KernelLibrary(variant, project).impls(runnable=True) if variant_runs_here(variant)[0] else []


def test_a_change_of_our_kernels_relinks_the_fork_and_fork_kernels_fork_unwraps(hooked):
    hook_c = hooked / "kernels" / "hook" / "mulmat.c"
    original = hook_c.read_text()
    try:
        hook_c.write_text(original + "\nconst char akf_hook_test_marker[] = \"relinked\";\n")
        res = scons(hooked, "variant=baseline", "fork=minifork", TARGETS, "fork_kernels=amxforge")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert "linking 1 fork binaries/libraries again" in res.stdout + res.stderr
        lib = hooked / "build" / "baseline" / "lib" / "libggml.so"
        assert b"relinked" in lib.read_bytes()
    finally:
        hook_c.write_text(original)
    res = scons(hooked, "variant=baseline", "fork=minifork", TARGETS, "fork_kernels=fork")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert record(hooked, "baseline")["kernels"] == {"choice": "fork"}
    lib = hooked / "build" / "baseline" / "lib" / "libggml.so"
    assert b"__wrap_iqk_mul_mat_4d" not in lib.read_bytes() and b"relinked" not in lib.read_bytes()


@pytest.fixture
def bare(tmp_path):
    return make_project(tmp_path)


def test_unknown_value_and_no_fork_are_one_line(bare):
    res = scons(bare, "variant=baseline", "fork=minifork", "fork_kernels=ours")
    assert res.returncode == 2 and "fork_kernels='ours': give fork" in res.stderr and "Traceback" not in res.stderr
    res = scons(bare, "variant=baseline", "fork_kernels=amxforge")
    assert res.returncode == 2 and "fork_kernels=amxforge needs fork=" in res.stderr, res.stderr


def test_a_tree_without_the_entry_is_refused_before_anything_is_built(bare):
    header = bare / "minifork" / "ggml" / "src" / "iqk" / "iqk_mul_mat.h"
    header.write_text(header.read_text().replace("iqk_mul_mat_4d(", "iqk_other_4d("))
    res = scons(bare, "variant=baseline", "fork=minifork", "fork_kernels=amxforge")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "does not declare iqk_mul_mat_4d in" in res.stderr and "Traceback" not in res.stderr
    assert not (bare / "build" / "baseline" / "fork" / "amxforge-build.json").exists()


def test_a_tree_that_declares_the_entry_but_never_calls_it_is_refused(bare):
    ggml_c = bare / "minifork" / "ggml" / "src" / "ggml.c"
    text = ggml_c.read_text()
    assert "if (!iqk_mul_mat_4d(" in text and "if (iqk_mul_mat_4d(" in text
    dead = text.replace("if (!iqk_mul_mat_4d(", "if (1 || !iqk_mul_mat_4d(")
    dead = dead.replace("if (iqk_mul_mat_4d(", "if (0 && iqk_mul_mat_4d(")
    ggml_c.write_text(dead)  # both calls are dead code
    cml = bare / "minifork" / "ggml" / "src" / "CMakeLists.txt"
    cml.write_text(cml.read_text().replace(" iqk/iqk_mul_mat.cpp", ""))
    res = scons(bare, "variant=baseline", "fork=minifork", "fork_targets=llama-bench", "fork_kernels=amxforge")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "defines or calls iqk_mul_mat_4d" in res.stderr and "nothing was installed" not in res.stderr
    assert not (bare / "build" / "baseline" / "fork" / "amxforge-build.json").exists()


def test_a_backend_kind_without_the_loader_is_refused(tmp_path):
    """miniwhisper is a whisper.cpp tree: ours would enter as a ggml backend, and it declares no loader."""
    project = make_project(tmp_path, fork=False)
    shutil.copytree(FIXTURES / "miniwhisper", project / "miniwhisper")
    res = scons(project, "variant=baseline", "fork=miniwhisper", "fork_kernels=amxforge")
    assert res.returncode == 2 and "does not declare ggml_backend_load" in res.stderr, res.stderr


def test_a_project_and_tree_under_paths_with_a_space_and_quotes(tmp_path):
    """The archive, the link config and the tree all reach the linker through argument vectors: a space or a quote in
    any of their paths changes nothing (CMake gets such paths through its link, as every fork build does)."""
    project = make_project(tmp_path / "my \"amx\" project", fork=False)
    shutil.copytree(FIXTURES / "minifork", project / "fork tree's copy")
    res = scons(project, "variant=baseline", "fork=fork tree's copy", "fork_targets=minifork-matmul",
                "fork_kernels=amxforge")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert record(project, "baseline")["kernels"]["proven"] == {"build/baseline/lib/libggml.so": ["iqk_mul_mat_4d"]}
    ours, ref, bound, stderr = matmul(project, "baseline", tmp_path, 40, 3, 70, 2, {"AMXFORGE_KERNELS_STATS": "1"})
    assert "taken: dense 40x3 (K 70)" in stderr and np.all(np.abs(ours - ref) <= bound)
