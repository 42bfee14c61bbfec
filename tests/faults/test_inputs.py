"""Hostile input and hostile environments: damaged caches, foreign cpuinfo, compilers that reject a flag, full and
read-only disks, errors inside templates, and bugs. One line naming the problem, a meaningful exit code, nothing
half-written, never a Python traceback."""

import json
import os
import stat

import pytest

from conftest import FIXTURES, ROOT, make_project, policy_root, run, scons, tool
from faultlib import remount, tmpfs

CPUS = FIXTURES / "cpuinfo"


def one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


# --- the probe ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["", "processor\t: 0\nvendor_id\t: GenuineIntel\n", "\x00\x01 garbage\n"])
def test_a_cpuinfo_without_flags_is_bad_input_and_leaves_the_host_cache(tmp_path, content):
    cache = tmp_path / "cache"
    host = run([tool("amxforge"), "probe", "--json"], env={"AMXFORGE_CACHE": str(cache)})
    assert host.returncode == 0
    before = (cache / "probe.json").read_bytes()
    bad = tmp_path / "cpuinfo"
    bad.write_text(content)
    res = run([tool("amxforge"), "probe", "--cpuinfo", str(bad)], env={"AMXFORGE_CACHE": str(cache)})
    assert res.returncode == 2 and "no `flags` line" in one_line(res)
    # and a good foreign cpuinfo gets its own cache file
    assert run([tool("amxforge"), "probe", "--cpuinfo", str(CPUS / "desktop_avx2.txt")],
               env={"AMXFORGE_CACHE": str(cache)}).returncode == 0
    assert (cache / "probe.json").read_bytes() == before


@pytest.mark.parametrize("damage", ["[1, 2, 3]", "{\"key\": 5}", "{\"key\": \"x\", \"result\": []}", "not json", ""])
def test_a_damaged_probe_cache_is_a_miss_and_is_rewritten(tmp_path, damage):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "probe.json").write_text(damage)
    res = run([tool("amxforge"), "probe", "--json"], env={"AMXFORGE_CACHE": str(cache)})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["cpu"]["features"]
    assert json.loads((cache / "probe.json").read_text())["result"]["cpu"]["features"]


def wrapper_rejecting(tmp_path, flag: str) -> str:
    """A gcc that rejects one ISA flag, as an old or patched compiler would."""
    wrapper = tmp_path / "gcc-no-bf16"
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = "{flag}" ] && {{ echo "error: unrecognized '
                       f'command-line option {flag}" >&2; exit 1; }}; done\nexec gcc "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper)


def test_the_probe_and_the_build_judge_with_the_same_compiler(tmp_path):
    cc = wrapper_rejecting(tmp_path, "-mavx512bf16")
    env = {"AMXFORGE_CACHE": str(tmp_path / "cache"), "CC": cc}
    plan = json.loads(run([tool("amxforge"), "probe", "--json"], env=env, check=True).stdout)["variants"]
    assert plan["avx512"]["buildable"] is False and "-mavx512bf16" in plan["avx512"]["why"]
    assert plan["amx"]["buildable"] is False and plan["baseline"]["buildable"] is True
    assert plan["auto"]["picks"] == "baseline" or plan["auto"]["picks"] is None
    project = make_project(tmp_path, fork=False)
    res = scons(project, "variant=avx512", f"CC={cc}", env={"AMXFORGE_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 2 and "rejects -mavx512bf16" in one_line(res)
    assert not (project / "build").exists()
    # auto judged with this compiler never picks what it cannot build
    res = scons(project, f"CC={cc}", env={"AMXFORGE_CACHE": str(tmp_path / "cache")})
    assert "built variant baseline" in res.stdout or res.returncode == 2


def test_a_compiler_that_cannot_run_is_named_with_the_reason_in_words(tmp_path):
    """CC pointing at an executable that is no program (a truncated download, another machine's binary)."""
    cc = tmp_path / "my cc" / "gcc"
    cc.parent.mkdir()
    cc.write_bytes(b"\x7fELF truncated")
    cc.chmod(0o755)
    env = {"AMXFORGE_CACHE": str(tmp_path / "cache"), "CC": str(cc)}
    plan = json.loads(run([tool("amxforge"), "probe", "--json"], env=env, check=True).stdout)["variants"]
    assert plan["baseline"]["buildable"] is False
    assert plan["baseline"]["why"] == (f"compiler {cc} (CC) does not run (Exec format error); pass CC=/path/to/a/"
                                       f"working/compiler")


# --- usage errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["flags"], "Missing argument 'FILES...'"),
    (["audit", "--json", "--nope"], "No such option '--nope'"),
    (["probe", "--cpuinfo", "/nonexistent"], "'/nonexistent' does not exist"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["bench", "kernels", "--threads", "0"], "give positive counts"),
    (["model", "synth"], "Missing option '--out'"),
])
def test_usage_errors_are_one_line_naming_the_fix(args, fragment):
    res = run([tool("amxforge"), *args])
    line = one_line(res)
    assert res.returncode == 2 and fragment in line and line.startswith("amxforge: error: ")


def test_bench_fork_refuses_what_is_not_a_release_in_one_line_writing_nothing(tmp_path):
    """--package of a directory that is missing, empty (its name with a space and a quote), or whose manifest is a
    FIFO (read, it would block): exit 2, one line, nothing written where the benchmark runs."""
    empty = tmp_path / "my 'rel'"
    empty.mkdir()
    fifo = tmp_path / "fifo-rel"
    (fifo / "share" / "amxforge").mkdir(parents=True)
    (fifo / "share" / "amxforge" / "launch.tsv").write_text("")
    os.mkfifo(fifo / "manifest.json")
    work = tmp_path / "work"
    work.mkdir()
    for rel in (tmp_path / "missing", empty, fifo):
        res = run([tool("amxforge"), "bench", "fork", "--package", str(rel), "--threads", "1"], cwd=work, timeout=60)
        line = one_line(res)
        assert res.returncode == 2 and line == (f"amxforge: error: --package {rel}: not an amxforge release (no "
                                                f"manifest.json and share/amxforge/launch.tsv); give the directory "
                                                f"`amxforge package --out` wrote"), res.stderr
        assert list(work.iterdir()) == []


def test_model_synth_out_a_fifo_or_in_no_directory(tmp_path):
    """--out a FIFO was replaced by a regular file; now refused, as --plot is, and the FIFO left as it was."""
    fifo = tmp_path / "my 'm'.gguf"
    os.mkfifo(fifo)
    for out, why in ((fifo, "it is a FIFO, not a regular file"), (tmp_path / "no dir" / "m.gguf",
                                                                   "No such file or directory")):
        res = run([tool("amxforge"), "model", "synth", "--out", str(out), "--layers", "1"])
        assert res.returncode == 2 and one_line(res) == (f"amxforge: error: --out {out}: cannot be written ({why}); "
                                                         f"give a .gguf path in an existing, writable directory")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and sorted(p.name for p in tmp_path.iterdir()) == [fifo.name]


# --- disks --------------------------------------------------------------------------------------------------------
def test_model_synth_on_a_read_only_or_full_disk(tmp_path):
    with tmpfs(tmp_path / "small", "256k") as small:
        res = run([tool("amxforge"), "model", "synth", "--out", str(small / "m.gguf"), "--layers", "2"])
        line = one_line(res)  # refused up front from the model's size, or when the disk fills while writing
        assert res.returncode == 2 and "the disk is full" in line and ("cannot write" in line or "MiB free" in line)
        assert list(small.iterdir()) == []  # nothing half-written
        remount(small, "ro")
        res = run([tool("amxforge"), "model", "synth", "--out", str(small / "m.gguf"), "--layers", "1"])
        assert res.returncode == 2 and "Read-only file system" in one_line(res)


def test_a_full_disk_during_a_build_then_room_again(tmp_path):
    """A build that runs out of space fails (exit != 0, no traceback); with room again the next build completes and
    is up to date: nothing half-written was trusted."""
    with tmpfs(tmp_path / "disk", "16m") as disk:
        project = make_project(disk, fork=False)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (free - 200 * 1024))  # 200 KB left: the build needs about 600 KB
        res = scons(project, "variant=baseline")
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert "No space left on device" in res.stdout + res.stderr
        filler.unlink()
        res = scons(project, "variant=baseline")
        assert res.returncode == 0, res.stderr[-2000:]
        assert scons(project, "-q", "variant=baseline").returncode == 0
        assert run([tool("amxforge"), "audit", "--variant", "baseline"], cwd=project).returncode == 0


def test_a_read_only_build_directory(tmp_path):
    with tmpfs(tmp_path / "disk", "64m") as disk:
        project = make_project(disk, fork=False)
        assert scons(project, "variant=baseline").returncode == 0
        (project / "kernels" / "dense" / "gemm_ref.c").write_text(
            (project / "kernels" / "dense" / "gemm_ref.c").read_text() + "\n/* touched */\n")
        remount(disk, "ro")
        res = scons(project, "variant=baseline")
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert "Read-only file system" in res.stdout + res.stderr
        remount(disk, "rw")
        assert scons(project, "variant=baseline").returncode == 0
        assert scons(project, "-q", "variant=baseline").returncode == 0


# --- templates and bugs -------------------------------------------------------------------------------------------
def altered_root(tmp_path, template: str, text: str) -> str:
    root = policy_root(tmp_path)
    (root / "templates" / "flags" / template).write_text(text)
    return str(root)


@pytest.mark.parametrize("text,fragment", [
    ("{{ march(level) }} {{ 1 // 0 }}", "ZeroDivisionError"),
    ("{{ march(level) }} {{ base.nope() }}", "template error"),
    ("{{ flag('warp_drive') }}", "template error"),
])
def test_a_runtime_error_inside_a_flag_template_is_one_line(tmp_path, text, fragment):
    root = altered_root(tmp_path, "default.j2", text)
    project = make_project(tmp_path, fork=False)
    res = scons(project, "variant=baseline", env={"AMXFORGE_ROOT": root})
    line = one_line(res)
    assert res.returncode == 2 and fragment in line and "default.j2" in line
    assert not (project / "build").exists()
    res = run([tool("amxforge"), "flags", "--variant", "baseline", str(ROOT / "kernels" / "dense" / "gemm_ref.c")],
              env={"AMXFORGE_ROOT": root})
    assert res.returncode == 2 and fragment in one_line(res)


def test_a_bug_in_the_cli_is_one_line_naming_a_log_and_exit_3(tmp_path, monkeypatch, capsys):
    from amxforge import cli
    monkeypatch.setenv("AMXFORGE_CACHE", str(tmp_path))

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")
    monkeypatch.setattr("amxforge.probe.probe", broken)
    assert cli.main(["probe"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: RuntimeError: simulated bug" in err[0]
    log = err[0].split("the traceback is in ")[1].split(";")[0]
    assert "Traceback" in open(log).read() and "simulated bug" in open(log).read()


def test_a_bug_under_scons_is_one_line_naming_a_log_and_exit_3(tmp_path):
    project = tmp_path / "buggy"
    project.mkdir()
    (project / "SConstruct").write_text(
        "from amxforge import sconsglue\nwith sconsglue.error_boundary():\n    {}['missing']\n")
    res = run([tool("scons"), "-Q", f"--site-dir={ROOT / 'site_scons'}"], cwd=project,
              env={"AMXFORGE_CACHE": str(tmp_path / "cache")})
    line = one_line(res)
    assert res.returncode == 3 and "internal error: KeyError" in line and "the traceback is in" in line
    assert (tmp_path / "cache" / "logs").is_dir()


def test_a_bug_inside_a_build_action_is_one_line_and_exit_3(tmp_path):
    project = tmp_path / "buggy"
    project.mkdir()
    (project / "SConstruct").write_text(
        "from amxforge.crash import scons_action\n"
        "@scons_action\ndef boom(target, source, env):\n    raise ValueError('simulated bug in an action')\n"
        "Command('out.txt', [], boom)\n")
    res = run([tool("scons"), "-Q", f"--site-dir={ROOT / 'site_scons'}"], cwd=project,
              env={"AMXFORGE_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 3 and "Traceback" not in res.stderr
    assert "internal error: ValueError: simulated bug in an action" in res.stderr
    assert not (project / "out.txt").exists()


def test_exit_codes_of_scons_audit_match_amxforge_audit(minitree_copy):
    project = minitree_copy("exitcodes")
    assert scons(project, "variant=baseline", "audit").returncode == 0
    res = scons(project, "variant=baseline", "leak=1", "audit")
    assert res.returncode == 1, res.stderr  # findings: 1, not SCons's 2
    assert run([tool("amxforge"), "audit", "--variant", "baseline"], cwd=project).returncode == 1
    assert run([tool("amxforge"), "audit", "--variant", "avx1024"], cwd=project).returncode == 2
