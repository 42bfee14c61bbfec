"""Build state under faults: concurrent builds, failed fork builds, damaged or missing records and objects, kills at
random points. Each leaves either the last good build intact or a build that the next `scons` repairs, and `scons -q`
after any successful build exits 0."""

import json
import os
import random
import signal
import subprocess
import time

import pytest

from conftest import SITE, killable_env, make_project, run, scons, tool
from faultlib import digest_tree

FORK = ("fork=minifork", "fork_targets=llama-bench,llama-cli")


def scons_bg(project, *args):
    return subprocess.Popen([tool("scons"), "-Q", f"--site-dir={SITE}", *args], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=killable_env(project.parent))


def audit(project, variant):
    res = run([tool("amxforge"), "audit", "--variant", variant, "--json"], cwd=project)
    return res.returncode, (json.loads(res.stdout) if res.stdout.startswith("{") else res.stderr)


# --- concurrency ------------------------------------------------------------------------------------------------
def test_different_variants_build_at_once(tmp_path):
    project = make_project(tmp_path, fork=False)
    procs = [scons_bg(project, f"variant={v}") for v in ("baseline", "avx512")]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for variant in ("baseline", "avx512"):  # each variant's own signature database: neither state was lost
        assert (project / "build" / variant / ".sconsign.dblite").is_file()
        assert scons(project, "-q", f"variant={variant}").returncode == 0
    assert not (project / ".sconsign.dblite").exists()


def test_the_same_variant_twice_at_once_waits_instead_of_corrupting(tmp_path):
    project = make_project(tmp_path, fork=False)
    for attempt in range(3):
        subprocess.run(["rm", "-rf", str(project / "build")])
        procs = [scons_bg(project, "variant=baseline") for _ in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert scons(project, "-q", "variant=baseline").returncode == 0
        if any("another build of variant baseline is running" in err for _, err in outs):
            return  # seen waiting at least once (the second may also start after the first finished)
    pytest.fail("the two builds never overlapped in three attempts: the lock was never exercised")


# --- fork builds that fail ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("breakage", ["configure", "compile"])
def test_a_failed_fork_build_leaves_the_last_good_one_exactly(fork_project, breakage):
    """A copy of the tree that fails to configure (CMake error) or to compile (a unit with a syntax error): the
    previous good build's binaries, libraries, ledger, record, policy.json and compile_commands.json are unchanged,
    and the audit still sees the good build."""
    import shutil
    broken = fork_project / f"broken-{breakage}"
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(fork_project / "minifork", broken)
    if breakage == "configure":
        (broken / "CMakeLists.txt").write_text((broken / "CMakeLists.txt").read_text() + "\nmessage(FATAL_ERROR x)\n")
    else:
        (broken / "ggml" / "src" / "ggml.c").write_text("this is not C;\n")
    before = digest_tree(fork_project / "build" / "baseline")
    res = scons(fork_project, "variant=baseline", f"fork=broken-{breakage}", "fork_targets=llama-bench,llama-cli")
    assert res.returncode != 0
    assert "the last good build is untouched" in res.stderr
    assert digest_tree(fork_project / "build" / "baseline") == before
    rc, result = audit(fork_project, "baseline")
    assert rc == 0 and result["by_class"]["protected"] == 3, result
    policy = json.loads((fork_project / "build" / "baseline" / "policy.json").read_text())
    assert policy["fork"]["root"].endswith("/minifork")
    # and the good tree is still up to date
    assert scons(fork_project, "-q", "variant=baseline", *FORK).returncode == 0


# --- the audit trusts nothing it cannot see -------------------------------------------------------------------------
@pytest.mark.parametrize("damage,expect", [
    ("delete-ledger", "ledger.jsonl: No such file"),
    ("truncate-ledger", "damaged (does not match its record)"),
    ("garbage-record", "damaged fork build record"),
    ("delete-record", "amxforge-build.json is missing"),
    ("delete-object", "missing"),
    ("truncate-object", "truncated or replaced"),
])
def test_the_audit_fails_when_the_fork_build_cannot_be_seen(fork_project, damage, expect):
    """Damage the last good build's ledger, record or one of its objects: the audit exits 1 naming it (it never
    audits the kernels alone and calls that clean); `scons -q` says out of date; the next build repairs it."""
    state = fork_project / "build" / "baseline" / "fork"
    ledger, record = state / "ledger.jsonl", state / "amxforge-build.json"
    obj = json.loads(ledger.read_text().splitlines()[0])["object"]
    if damage == "delete-ledger":
        ledger.unlink()
    elif damage == "truncate-ledger":
        ledger.write_text(ledger.read_text().splitlines()[0] + "\n")
    elif damage == "garbage-record":
        record.write_text("[1, 2")
    elif damage == "delete-record":
        record.unlink()
    elif damage == "delete-object":
        os.unlink(obj)
    else:
        with open(obj, "r+b") as handle:
            handle.truncate(100)
    rc, result = audit(fork_project, "baseline")
    assert rc == 1, result
    assert any(expect in f["problem"] for f in result["findings"]), result["findings"]
    assert scons(fork_project, "-q", "variant=baseline", *FORK).returncode == 1
    res = scons(fork_project, "variant=baseline", *FORK)
    assert res.returncode == 0, res.stderr[-2000:]
    rc, result = audit(fork_project, "baseline")
    assert rc == 0 and result["by_class"]["protected"] == 3, result
    assert scons(fork_project, "-q", "variant=baseline", *FORK).returncode == 0


def test_compile_commands_never_silently_lose_the_fork(fork_project):
    entries = json.loads((fork_project / "build" / "baseline" / "compile_commands.json").read_text())
    assert any("minifork" in e["file"] for e in entries) and any("kernels" in e["file"] for e in entries)


# --- damaged outputs are repaired ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kernels_built(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("damage"), fork=False)
    assert scons(project, "variant=baseline").returncode == 0
    return project


@pytest.mark.parametrize("target", ["policy.json", "compile_commands.json", "obj/kernels/dense/gemm_avx2.os",
                                    "lib/libamxforge_kernels.so", "libexec/amxforge-selftest", "bin/amxforge-kbench",
                                    "gen/akf_table.h", "share/amxforge/launch.tsv"])
@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_a_damaged_output_is_seen_and_rebuilt(kernels_built, target, how):
    project = kernels_built
    path = project / "build" / "baseline" / target
    good = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else good[:len(good) // 3])
    assert scons(project, "-q", "variant=baseline").returncode == 1  # SCons sees it out of date
    res = scons(project, "variant=baseline")
    assert res.returncode == 0, res.stderr
    assert "does not match what was built" in res.stderr and target in res.stderr
    assert path.read_bytes() == good
    assert scons(project, "-q", "variant=baseline").returncode == 0
    assert run([tool("amxforge"), "audit", "--variant", "baseline"], cwd=project).returncode == 0


def test_an_empty_policy_record_is_named_by_the_audit_not_a_traceback(kernels_built):
    project = kernels_built
    (project / "build" / "baseline" / "policy.json").write_text("")
    res = run([tool("amxforge"), "audit", "--variant", "baseline"], cwd=project)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "damaged policy record" in res.stderr
    assert scons(project, "variant=baseline").returncode == 0  # and the next build repairs it


# --- kill -9 at random points, then build again ----------------------------------------------------------------------
@pytest.mark.parametrize("with_fork", [False, True])
def test_kill_9_at_random_points_then_rebuild(tmp_path, with_fork):
    project = make_project(tmp_path, fork=with_fork)
    args = ["variant=baseline", "jobs=2"] + (list(FORK) if with_fork else [])
    rng = random.Random(7 if with_fork else 3)
    for _ in range(3):
        proc = scons_bg(project, *args)
        time.sleep(rng.uniform(0.3, 4.0 if with_fork else 2.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        res = scons(project, *args)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert scons(project, "-q", *args).returncode == 0
        assert run([tool("amxforge"), "audit", "--variant", "baseline"], cwd=project).returncode == 0
        subprocess.run(["rm", "-rf", str(project / "build" / "baseline" / "obj" / "kernels" / "dense")])
