"""Issue 18, items 2 and 3: any path builds, and nothing reaches a shell. A checkout and a fork tree under directories
named with spaces, quotes, `$(...)`, backticks and `;` build, install binaries that run, are up to date afterwards,
keep no absolute path in their objects, and run none of the commands their names spell. A flag in toolchain/ that is
not an ISA flag is refused when the file is loaded; a newline in a path is one clear refusal."""

import json
import os
import shutil
import sys

import pytest

from conftest import FIXTURES, edit_isa_feature, make_project, policy_root, run, scons, tool, variant_runs_here

# each part would run a command if anything handed it to `sh -c` unquoted, or SCons substituted it
HOSTILE = "my proj `touch PWNED1` $(touch PWNED2) ;touch PWNED3; q'\"d $HOME"


def planted(root) -> list:
    return sorted(str(p) for p in root.rglob("PWNED*")) + sorted(f for f in os.listdir(".") if f.startswith("PWNED"))


def test_a_checkout_and_a_fork_at_hostile_paths_build_run_and_run_nothing(tmp_path):
    project = make_project(tmp_path / HOSTILE, fork=False)
    fork = tmp_path / f"fork {HOSTILE}"
    shutil.copytree(FIXTURES / "minifork", fork)
    res = scons(project, "variant=baseline", f"fork={fork}", "fork_targets=llama-bench")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert planted(tmp_path) == []
    assert scons(project, "-q", "variant=baseline", f"fork={fork}", "fork_targets=llama-bench").returncode == 0
    build = project / "build" / "baseline"
    # the prefix maps reached the compiler whole: no object keeps the checkout's or the tree's path
    for obj in list((build / "obj").rglob("*.o")):
        assert str(project).encode() not in obj.read_bytes(), obj
    ledger = (build / "fork" / "ledger.jsonl").read_text()
    assert ledger.count('"policy"') >= 5
    ok, why = variant_runs_here("baseline")
    if not ok:
        pytest.skip(f"built and checked; the binaries cannot run here: {why}")
    selftest = run([str(build / "bin" / "amxforge-selftest")])
    assert selftest.returncode == 0, selftest.stderr  # the rpath ($ORIGIN/../lib) reached the linker as written
    bench = run([str(build / "bin" / "llama-bench"), "-h"])
    assert bench.returncode == 0, bench.stderr


@pytest.mark.parametrize("where", ["project", "fork"])
def test_a_newline_in_a_path_is_one_clear_refusal(tmp_path, where):
    project = make_project(tmp_path / ("new\nline" if where == "project" else "plain"), fork=False)
    fork = tmp_path / ("plain-fork" if where == "project" else "fork\nwith newline")
    shutil.copytree(FIXTURES / "minifork", fork)
    res = scons(project, "variant=baseline", f"fork={fork}")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "holds a control character ('\\n')" in lines[0] and "Traceback" not in res.stderr
    assert not (project / "build").exists()


@pytest.mark.parametrize("field,value", [
    ("flag", "-march=x86-64-v3 -DX=`touch PWNED4`"),
    ("no_flag", "-DGGML_EVIL=1"),
    ("flag", "-mavx2;touch PWNED5"),
])
def test_a_flag_in_isa_toml_that_is_no_isa_flag_is_refused_at_load(tmp_path, field, value):
    root = policy_root(tmp_path)
    edit_isa_feature(root, "avx2", field, f"{field} = {json.dumps(value)}")
    project = make_project(tmp_path, fork=False)
    env = {"AMXFORGE_ROOT": str(root)}
    for res in (scons(project, "variant=baseline", env=env), run([tool("amxforge"), "probe"], env=env)):
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert f"[features.avx2] {field}" in lines[0] and "is not an ISA flag" in lines[0]
    assert planted(tmp_path) == [] and not (project / "build").exists()


def test_a_template_that_renders_a_non_isa_flag_is_refused_for_every_variant(tmp_path):
    """A typo or a -D inside a loop that is empty for baseline fails every build, not only amx's."""
    root = policy_root(tmp_path)
    amx = root / "templates" / "flags" / "amx.j2"
    amx.write_text(amx.read_text().replace("{{ flag(f) }}", "{{ flag(f) }}\n-DAMX_UNIT=1", 1))
    project = make_project(tmp_path, fork=False)
    res = scons(project, "variant=baseline", env={"AMXFORGE_ROOT": str(root)})
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "amx.j2: renders '-DAMX_UNIT=1'" in lines[0], res.stderr
    amx.write_text(amx.read_text().replace("-DAMX_UNIT=1", "{{ flag(f).upper_nope() }}"))
    res = scons(project, "variant=baseline", env={"AMXFORGE_ROOT": str(root)})
    assert res.returncode == 2 and "amx.j2:" in res.stderr and "template error" in res.stderr
    assert not (project / "build").exists()


def test_scons_commands_run_without_a_shell(tmp_path):
    """The spawn amxforge gives SCons: an argument with a space, quotes, `$` or a backtick arrives byte for byte
    (SCons wraps arguments with whitespace in one pair of quotes before SPAWN; the spawn takes exactly that off)."""
    from amxforge.argv import quote, spawn
    out = tmp_path / "args"
    script = tmp_path / "dump.py"
    script.write_text("import sys, json; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))\n")
    args = ["plain", "with space", "`touch PWNED6`", "$(touch PWNED7)", "a;b", '"quoted both"', "tab\there"]
    argv = [quote(a) for a in [sys.executable, str(script), str(out), *args]]
    assert spawn("sh", None, sys.executable, argv, dict(os.environ)) == 0
    assert json.loads(out.read_text()) == args and planted(tmp_path) == []
    assert spawn("sh", None, "x", ["/nonexistent/program"], {}) == 127
