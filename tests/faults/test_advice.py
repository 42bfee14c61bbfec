"""Issue 18, items 5 (files), 11, 12 and 13: every read has a shape, bad input is one line before any work, and the
advice a message gives works when typed. Each test types what the message told it to."""

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, edit_isa_feature, make_project, policy_root, run, scons, tool

CPUS = FIXTURES / "cpuinfo"


def one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def advised(line: str, before: str, after: str = None) -> str:
    """The text a message tells the user to type: between `before` and `after` (or the end)."""
    text = line.split(before, 1)[1]
    return text.split(after, 1)[0] if after else text


# --- item 5: files amxforge reads are regular files; a FIFO never hangs it ------------------------------------------
@pytest.mark.parametrize("name", ["probe.json", "flags-fifo"])
def test_a_fifo_where_a_cache_was_is_a_miss(tmp_path, name):
    cache = tmp_path / "cache"
    cache.mkdir()
    if name == "flags-fifo":  # the planner's per-compiler flag cache: every file it could be
        first = run([tool("amxforge"), "probe", "--json"], env={"AMXFORGE_CACHE": str(cache)}, timeout=60)
        assert first.returncode == 0
        for flags in cache.glob("flags-*.json"):
            flags.unlink()
            os.mkfifo(flags)
        (cache / "probe.json").unlink()
    else:
        os.mkfifo(cache / name)
    res = run([tool("amxforge"), "probe", "--json"], env={"AMXFORGE_CACHE": str(cache)}, timeout=60)
    assert res.returncode == 0 and json.loads(res.stdout)["cpu"]["features"], res.stderr
    assert (cache / "probe.json").is_file()  # replaced by a real cache


def test_a_fifo_as_cpuinfo_is_one_line_and_the_advice_works(tmp_path):
    fifo = tmp_path / "cpuinfo"
    os.mkfifo(fifo)
    res = run([tool("amxforge"), "probe", "--cpuinfo", str(fifo)], timeout=30)
    assert res.returncode == 2 and "is a FIFO, not a regular file; pass --cpuinfo" in one_line(res)
    res = run([tool("amxforge"), "probe", "--cpuinfo", str(CPUS / "desktop_avx2.txt")], timeout=60)
    assert res.returncode == 0
    # scons has no --cpuinfo: its message names the variable it reads, and that works as typed
    project = make_project(tmp_path, fork=False)
    res = scons(project, "variant=baseline", env={"AMXFORGE_CPUINFO": str(fifo)})
    line = one_line(res)
    assert res.returncode == 2 and "set AMXFORGE_CPUINFO=FILE" in line and "--cpuinfo" not in line
    res = scons(project, "variant=baseline", env={"AMXFORGE_CPUINFO": str(CPUS / "desktop_avx2.txt")})
    assert res.returncode == 0, res.stderr[-2000:]


# --- item 12: advice that works ---------------------------------------------------------------------------------
def old_gcc(tmp_path) -> str:
    fake = tmp_path / "gcc-10"
    fake.write_text('#!/bin/sh\ncase "$1" in -dumpfullversion) echo 10.2.0;; --version) echo "gcc (fake) 10.2.0";;'
                    ' *) exec gcc "$@";; esac\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return str(fake)


def test_a_compiler_too_old_for_every_variant_is_told_to_use_a_newer_one(tmp_path):
    cc = old_gcc(tmp_path)
    project = make_project(tmp_path, fork=False)
    env = {"AMXFORGE_CACHE": str(tmp_path / "cache")}
    res = scons(project, "variant=baseline", f"CC={cc}", env=env)
    line = one_line(res)
    assert res.returncode == 2 and "install gcc >= 11 and pass CC=/path/to/it" in line
    assert "choose a variant without" not in line  # every variant is x86-64-v3: no such variant
    probe = run([tool("amxforge"), "probe"], env={**env, "CC": cc})
    auto = next(line for line in probe.stdout.splitlines() if line.startswith("auto "))
    assert "picks None" not in auto and "can be built and run here" in auto
    res = scons(project, "variant=baseline", f"CC={shutil.which('gcc')}", env=env)  # a newer compiler, as told
    assert res.returncode == 0, res.stderr[-2000:]


def test_a_cxx_that_is_not_there_names_cxx(tmp_path):
    project = make_project(tmp_path)
    res = scons(project, "variant=baseline", "fork=minifork", "CXX=/nonexistent/g++")
    line = one_line(res)
    assert res.returncode == 2 and "(CXX) not found on PATH; install it or pass CXX=/path/to/it" in line
    res = scons(project, "variant=baseline", "fork=minifork", f"CXX={shutil.which('g++')}")
    assert res.returncode == 0, res.stderr[-2000:]


def test_a_missing_key_in_isa_toml_names_its_table(tmp_path):
    root = policy_root(tmp_path)
    edit_isa_feature(root, "avx2", "no_flag", None)
    res = run([tool("amxforge"), "probe"], env={"AMXFORGE_ROOT": str(root)})
    assert res.returncode == 2 and "[features.avx2]: missing key 'no_flag'" in one_line(res)


@pytest.mark.parametrize("variant", ["../build/baseline", "x;rm -rf ./zz", "build/baseline"])
def test_variant_names_only_where_a_variant_is_asked(tmp_path, variant):
    res = run([tool("amxforge"), "audit", "--variant", variant, "--project", str(tmp_path)])
    line = one_line(res)
    assert res.returncode == 2 and f"unknown variant {variant!r}; valid variants: baseline," in line
    for cmd in (["flags", "--variant", variant, str(ROOT / "kernels/dense/gemm_ref.c")],
                ["bench", "kernels", "--variant", variant, "--project", str(tmp_path)]):
        assert run([tool("amxforge"), *cmd]).returncode == 2


def test_cuda_archs_are_given_as_each_front_end_takes_them(tmp_path):
    """`amxforge flags` takes --cuda-arch, scons takes cuda_arch=; each message names its own, and it works typed."""
    from conftest import HOST_PROBE
    nvcc = HOST_PROBE["cuda"]["nvcc"]
    gemm = str(ROOT / "kernels/dense/gemm_ref.c")
    res = run([tool("amxforge"), "flags", "--variant", "cuda", "--cuda-arch", "1.20", gemm])
    if not nvcc:
        assert res.returncode == 2 and "needs nvcc" in one_line(res)
        pytest.skip("no nvcc here: the arch grammar is checked in tests/unit/test_policy.py")
    line = one_line(res)
    assert res.returncode == 2 and "write e.g. --cuda-arch 90" in line
    if "90" not in nvcc["archs"]:
        pytest.skip(f"this nvcc ({nvcc['version']}) has no arch 90 to type")
    assert run([tool("amxforge"), "flags", "--variant", "cuda", "--cuda-arch", "90", gemm]).returncode == 0
    if not HOST_PROBE["cuda"]["devices"]:
        res = run([tool("amxforge"), "flags", "--variant", "cuda", gemm])
        assert res.returncode == 2 and "pass --cuda-arch 90" in one_line(res)
    res = run([tool("amxforge"), "flags", "--variant", "baseline", "--cuda-arch", "90", gemm])
    assert res.returncode == 2 and "leave --cuda-arch out" in one_line(res)
    assert run([tool("amxforge"), "flags", "--variant", "baseline", gemm]).returncode == 0


# --- items 11 and 13: strict grammars, one line, before any work --------------------------------------------------
@pytest.mark.parametrize("args,fragment,typed", [
    (["verbose=banana"], "verbose='banana': give yes or no", ["verbose=no"]),
    (["jobs=0"], "jobs='0' is not a positive number; pass e.g. jobs=4", ["jobs=4"]),
    (["jobs=-4"], "jobs='-4' is not a positive number", ["jobs=4"]),
    (["fork_targets=llama-bench"], "pass fork=PATH too, or leave fork_targets out", []),
    (["cuda_arch=90"], "variant baseline has no CUDA units: leave cuda_arch out", []),
    (["nosuch=1"], "unknown variable(s) nosuch", []),
])
def test_scons_variables_are_typed(tmp_path, args, fragment, typed):
    project = make_project(tmp_path, fork=False)
    res = scons(project, "variant=baseline", *args)
    assert res.returncode == 2 and fragment in one_line(res)
    assert not (project / "build").exists()
    res = scons(project, "variant=baseline", *typed)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize("args,fragment", [
    (["--dim", "100000", "--ff", "100000"], "GiB of memory to write"),
    (["--dim", "1000"], "--dim (1000) must divide by --heads (16)"),
])
def test_model_synth_refuses_before_writing(tmp_path, args, fragment):
    res = run([tool("amxforge"), "model", "synth", "--out", str(tmp_path / "m.gguf"), *args], timeout=60)
    assert res.returncode == 2 and fragment in one_line(res)
    assert list(tmp_path.iterdir()) == []


def test_a_site_tool_whose_program_is_missing_says_so_when_it_is_used(tmp_path):
    """Each site tool's exists() checks its program; the build asks those it uses: without objdump a build works,
    `audit` is one line naming the package to install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        for prog in (Path(d).iterdir() if Path(d).is_dir() else ()):
            if prog.name != "objdump" and not (bin_dir / prog.name).exists():
                (bin_dir / prog.name).symlink_to(prog)
    env = {"PATH": str(bin_dir)}
    project = make_project(tmp_path, fork=False)
    assert scons(project, "variant=baseline", env=env).returncode == 0
    res = scons(project, "variant=baseline", "audit", env=env)
    assert res.returncode == 2 and "the amxforge_audit tool needs objdump on PATH: install binutils" in one_line(res)
