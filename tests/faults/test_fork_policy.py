"""Issue 18, items 1 and 6: a fork build proves its policy, and its ninja is amxforge's.

1. Another CXX (the same compiler under another name) makes CMake delete its cache and with it amxforge's settings;
   a hand-run cmake/ninja in the build directory compiles around the launcher; a tree that forces -march=native.
   Every build after them either re-applies the settings and compiles through the launcher, or fails saying why;
   `scons -q` never calls a build up to date that the ledger does not prove.
6. `kill -9` of the scons process alone stops its ninja (and ninja its compilers); a ninja that survived anyway is
   found through the build directory's lock and stopped before the next build; a damaged deps log is recovered."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import HOST, SITE, killable_env, make_project, run, scons, tool

ARGS = ("variant=baseline", "fork=minifork", "fork_targets=llama-bench")


def work_dir(project: Path) -> Path:
    return next((project / "build" / "baseline" / "fork-work").iterdir())


def compile_commands_in_graph(work: Path) -> list:
    """The compile commands of build.ninja (CMake's compiler rules), as ninja would run them."""
    rules = [r for r in run([tool("ninja"), "-C", str(work), "-t", "rules"]).stdout.split()
             if "_COMPILER__" in r]
    return [e["command"] for e in json.loads(run([tool("ninja"), "-C", str(work), "-t", "compdb", *rules]).stdout)]


def assert_policy_held(project: Path) -> None:
    work = work_dir(project)
    cache = (work / "CMakeCache.txt").read_text()
    assert "GGML_NATIVE:BOOL=OFF" in cache and "amxforge-shim" in cache
    commands = compile_commands_in_graph(work)
    assert commands and all("amxforge-shim" in c.split()[0] for c in commands), commands
    ledger = [json.loads(x) for x in (project / "build" / "baseline" / "fork" / "ledger.jsonl").read_text().splitlines()]
    assert ledger and all("-march=native" not in e["command"] for e in ledger)
    if "avx512f" in HOST:  # -march=native would have put AVX-512 into libggml.so here
        dis = run(["objdump", "-d", str(project / "build" / "baseline" / "lib" / "libggml.so")]).stdout
        assert "zmm" not in dis


def test_another_cxx_then_back_keeps_the_policy(tmp_path):
    project = make_project(tmp_path)
    alias = tmp_path / "bin" / "g++-by-another-name"
    alias.parent.mkdir()
    alias.symlink_to(os.path.realpath(shutil.which("g++")))
    for extra in ((), (f"CXX={alias}",), ()):
        res = scons(project, *ARGS, *extra)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert_policy_held(project)
        assert scons(project, "-q", *ARGS, *extra).returncode == 0


def test_a_build_compiled_around_the_launcher_is_not_up_to_date_and_is_repaired(tmp_path):
    project = make_project(tmp_path)
    assert scons(project, *ARGS).returncode == 0
    work = work_dir(project)
    # what a user with the build directory at hand might do: reconfigure it by hand and build
    run([tool("cmake"), "-DGGML_NATIVE=ON", "-DCMAKE_C_COMPILER_LAUNCHER=", "-DCMAKE_CXX_COMPILER_LAUNCHER=",
         str(work)], check=True)
    run([tool("ninja"), "-C", str(work), "llama-bench"], check=True)
    assert "amxforge-shim" not in compile_commands_in_graph(work)[0]
    assert scons(project, "-q", *ARGS).returncode == 1
    res = scons(project, *ARGS)
    assert res.returncode == 0 and "amxforge: configuring" in res.stdout, res.stderr  # its settings re-applied
    assert_policy_held(project)
    assert scons(project, "-q", *ARGS).returncode == 0


def test_an_object_replaced_outside_the_launcher_is_compiled_again(tmp_path):
    """The ledger proves the object the launcher left: one compiled by anyone else since is not accepted."""
    project = make_project(tmp_path)
    assert scons(project, *ARGS).returncode == 0
    work = work_dir(project)
    obj = next(work.rglob("bench.cpp.o"))
    run(["g++", "-march=native", "-I", str(project / "minifork" / "ggml" / "include"), "-c",
         str(project / "minifork" / "tools" / "bench" / "bench.cpp"), "-o", str(obj)], check=True)
    assert scons(project, "-q", *ARGS).returncode == 1
    res = scons(project, *ARGS)
    assert res.returncode == 0
    assert any("bench.cpp.o" in line and "compiling" in line for line in res.stdout.splitlines()), res.stdout
    assert_policy_held(project)
    assert scons(project, "-q", *ARGS).returncode == 0


def test_a_tree_that_overrides_the_settings_fails_and_installs_nothing(tmp_path):
    project = make_project(tmp_path)
    cml = project / "minifork" / "CMakeLists.txt"
    cml.write_text(cml.read_text().replace('set(GGML_ARCH_FLAGS', 'set(GGML_NATIVE ON CACHE BOOL "" FORCE)\n'
                                                                  'set(GGML_ARCH_FLAGS', 1))
    res = scons(project, *ARGS)
    assert res.returncode == 2
    assert "does not keep amxforge's settings" in res.stderr and "GGML_NATIVE is 'ON', amxforge set 'OFF'" in res.stderr
    assert not (project / "build" / "baseline" / "bin" / "llama-bench").exists()
    assert scons(project, "-q", *ARGS).returncode == 1


# --- item 6 -----------------------------------------------------------------------------------------------------
def slow_cxx(tmp_path: Path, seconds: float) -> str:
    """g++ that takes `seconds` longer per unit of the tree (not for CMake's own checks): a build long enough to
    kill in the middle."""
    wrapper = tmp_path / "slow-g++"
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *minifork*) sleep {seconds};; esac\n'
                       f'exec {shutil.which("g++")} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def killed_in_the_middle(project: Path, tmp_path: Path, stop_ninja: bool):
    """A build with a slow compiler, its scons killed with SIGKILL while ninja compiles (its ninja SIGSTOPped first
    when stop_ninja); returns (the fork's work dir, ninja's pid)."""
    assert scons(project, *ARGS).returncode == 0
    proc = start_build(project, f"CXX={slow_cxx(tmp_path, 3)}", "jobs=1", env=killable_env(tmp_path))
    work = work_dir(project)
    # the ninja that builds, named in the lock it holds (not one of the short queries, `ninja -n` or `-t`, that the
    # build also runs in that directory)
    (ninja,) = wait_for(lambda: [p for p in ninjas_in(work) if lock_holder(work) == p])
    wait_for(lambda: any("slow-g++" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                         for p in filter(str.isdigit, os.listdir("/proc")) if os.path.exists(f"/proc/{p}/cmdline")))
    if stop_ninja:
        os.kill(ninja, signal.SIGSTOP)
    os.kill(proc.pid, signal.SIGKILL)  # scons only, not its process group
    proc.wait()
    return work, ninja


def lock_holder(work: Path):
    """The pid the build directory's ninja lock names, or None."""
    from amxforge.fork.ninja import LOCK
    try:
        text = (work / LOCK).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def ninjas_in(work: Path) -> list:
    """Live ninja processes whose working directory is `work`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "ninja" and \
                    os.readlink(f"/proc/{pid}/cwd") == str(work) and \
                    Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(int(pid))
        except OSError:
            continue
    return out


def start_build(project: Path, *extra, env=None):
    return subprocess.Popen([tool("scons"), "-Q", f"--site-dir={SITE}", *ARGS, *extra], cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_kill_9_of_scons_alone_stops_its_ninja_and_the_next_build_is_clean(tmp_path):
    project = make_project(tmp_path)
    work, ninja = killed_in_the_middle(project, tmp_path, stop_ninja=False)
    deadline = time.monotonic() + 20
    while ninjas_in(work) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ninjas_in(work), f"ninja {ninja} outlived its scons"
    res = scons(project, *ARGS)
    assert res.returncode == 0, res.stderr[-2000:]
    assert_policy_held(project)
    assert scons(project, "-q", *ARGS).returncode == 0


def test_a_ninja_that_outlived_its_build_is_found_and_stopped(tmp_path):
    """A stopped ninja cannot act on the parent-death signal: it holds the build directory's lock when the next build
    starts, which names it, stops it and builds."""
    project = make_project(tmp_path)
    work, ninja = killed_in_the_middle(project, tmp_path, stop_ninja=True)
    time.sleep(0.3)
    assert ninjas_in(work) == [ninja]  # left behind, holding the lock
    # work for the next build whatever the killed one got done (nothing to build: no ninja starts, none is stopped)
    os.utime(next(project.rglob("ggml/src/ggml.c")))
    res = scons(project, *ARGS)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"a ninja of an earlier build (pid {ninja}) still runs" in res.stdout
    assert not ninjas_in(work)
    assert_policy_held(project)
    assert scons(project, "-q", *ARGS).returncode == 0


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_deps_log_is_recovered(tmp_path, damage):
    project = make_project(tmp_path)
    assert scons(project, *ARGS).returncode == 0
    deps = work_dir(project) / ".ninja_deps"
    data = deps.read_bytes()
    deps.write_bytes(data[:len(data) // 2 + 3] if damage == "truncated" else data + os.urandom(4096))
    assert scons(project, *ARGS).returncode == 0
    ledger = work_dir(project) / "ledger.live.jsonl"
    before = ledger.read_text().count('"mode": "compile"')
    assert scons(project, "-q", *ARGS).returncode == 0
    assert scons(project, *ARGS).returncode == 0
    assert ledger.read_text().count('"mode": "compile"') == before  # settled: nothing compiles again
