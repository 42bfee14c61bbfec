"""amxforge-shim, table-driven, in milliseconds: the real shim (kernels/launcher/shim.c, compiled here) with the real
config amxforge writes for tests/fixtures/minifork, in dry-run mode (AMXFORGE_SHIM_DRY_RUN=1: the rewritten command
as one JSON line, nothing run); then a real link, which leaves a ledger line with its mode; and configs the shim must
refuse instead of truncating or defaulting."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import FIXTURES, ROOT


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """(shim binary, its config path, the rendered class flags, the tree root) for variant baseline."""
    from amxforge.context import VariantContext
    from amxforge.fork.detect import detect_fork
    from amxforge.fork.driver import ForkBuild

    tmp = tmp_path_factory.mktemp("shim")
    cc = shutil.which("gcc") or pytest.skip("gcc is not installed")
    exe = tmp / "amxforge-shim"
    subprocess.run([cc, "-O2", "-o", str(exe), str(ROOT / "kernels" / "launcher" / "shim.c")], check=True)
    tree = tmp / "minifork"
    shutil.copytree(FIXTURES / "minifork", tree)
    ctx = VariantContext("baseline", project_dir=tmp)
    build = ForkBuild(ctx, detect_fork(str(tree), base=str(tmp)), ["llama-bench"])
    config = tmp / "shim.conf"
    config.write_text(build.config_text)
    flags = {cls: list(ctx.class_flags(cls)) for cls in ctx.policy.classes.classes if cls != "cuda"}
    return exe, config, flags, tree


def dry(shim, *argv, config=None):
    exe, conf, _, _ = shim
    res = subprocess.run([str(exe), str(config or conf), *argv], capture_output=True, text=True,
                         env=dict(os.environ, AMXFORGE_SHIM_DRY_RUN="1"))
    return res


CASES = [  # (source relative to the tree, extra args, class, flags it must remove)
    ("ggml/src/ggml.c", ["-march=native", "-mavx2", "-O3"], "default", ["-march=native", "-mavx2"]),
    ("ggml/src/ggml-cpu/amx/mmq.cpp", ["-mamx-tile", "-mavx512f"], "amx", ["-mamx-tile", "-mavx512f"]),
    ("ggml/src/iqk/fa/iqk_fa_64_64.cpp", ["-mno-avx512f", "-mtune=native"], "protected",
     ["-mno-avx512f", "-mtune=native"]),
    ("tools/bench/bench.cpp", ["-march=x86-64-v4", "-DKEEP=1"], "default", ["-march=x86-64-v4"]),
]


@pytest.mark.parametrize("source,extra,cls,removed", CASES)
def test_a_compile_is_rewritten_by_its_class(shim, source, extra, cls, removed):
    _, _, flags, tree = shim
    res = dry(shim, "g++", *extra, "-c", str(tree / source), "-o", "x.o")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["mode"] == "compile" and rec["class"] == cls and rec["source"] == source
    assert rec["removed"] == removed and rec["added"] == flags[cls]
    cmd = rec["command"]
    assert not set(removed) & set(cmd) and cmd[-len(flags[cls]) - 1:] != []
    assert [a for a in cmd if a in extra] == [a for a in extra if a not in removed]
    assert "rc" not in rec  # nothing ran


@pytest.mark.parametrize("argv,mode", [
    (["g++", "a.o", "b.o", "-shared", "-o", "libx.so"], "link"),
    (["gcc", "-E", "x.c"], "preprocess"),
    (["gcc", "--version"], "other"),
])
def test_what_is_not_a_compilation_passes_unchanged(shim, argv, mode):
    res = dry(shim, *argv)
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["mode"] == mode and rec["command"] == argv


def test_a_real_link_leaves_a_ledger_line_with_its_mode(shim, tmp_path):
    exe, conf, _, _ = shim
    ledger = next(line.split("\t")[1] for line in conf.read_text().splitlines() if line.startswith("ledger\t"))
    os.makedirs(os.path.dirname(ledger), exist_ok=True)  # the driver makes CMake's binary dir
    (tmp_path / "m.c").write_text("int main(void) { return 0; }\n")
    res = subprocess.run([str(exe), str(conf), "gcc", str(tmp_path / "m.c"), "-o", str(tmp_path / "m")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    last = json.loads(open(ledger).read().splitlines()[-1])
    assert last["mode"] == "link" and last["rc"] == 0 and last["output"] == str(tmp_path / "m")
    assert "object" not in last  # never taken for a unit
    policy = next(line.split("\t")[1] for line in conf.read_text().splitlines() if line.startswith("policy\t"))
    assert last["policy"] == policy


def test_a_real_compile_records_its_policy_and_the_object_it_left(shim, tmp_path):
    """What the fork build's proof reads: the policy the unit compiled under, and its object's size and mtime."""
    exe, conf, _, tree = shim
    ledger = next(line.split("\t")[1] for line in conf.read_text().splitlines() if line.startswith("ledger\t"))
    os.makedirs(os.path.dirname(ledger), exist_ok=True)
    obj = tmp_path / "bench.o"
    res = subprocess.run([str(exe), str(conf), "g++", f"-I{tree / 'ggml/include'}", "-c",
                          str(tree / "tools/bench/bench.cpp"), "-o", str(obj)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    last = json.loads(open(ledger).read().splitlines()[-1])
    st = obj.stat()
    policy = next(line.split("\t")[1] for line in conf.read_text().splitlines() if line.startswith("policy\t"))
    assert last["object"] == str(obj) and last["policy"] == policy
    assert [last["object_size"], last["object_mtime_ns"]] == [st.st_size, st.st_mtime_ns]


def test_a_ledger_that_cannot_be_written_fails_the_unit(shim, tmp_path):
    """The ledger is the build's proof: a compile whose line cannot be written is an error (exit 2), not a hole."""
    exe, conf, _, tree = shim
    blocked = tmp_path / "ledger-is-a-directory"
    blocked.mkdir()
    config = _altered(shim, tmp_path, lambda ls: [f"ledger\t{blocked}" if x.startswith("ledger\t") else x
                                                  for x in ls])
    res = subprocess.run([str(exe), str(config), "g++", f"-I{tree / 'ggml/include'}", "-c",
                          str(tree / "tools/bench/bench.cpp"), "-o", str(tmp_path / "b.o")], capture_output=True,
                         text=True)
    assert res.returncode == 2 and "cannot open the ledger" in res.stderr


def test_nvcc_loses_its_arch_and_host_isa_flags(shim):
    _, _, _, tree = shim
    res = dry(shim, "nvcc", "-arch=sm_90", "-Xcompiler=-march=native,-O3", "-c",
              str(tree / "ggml/src/ggml-cuda/add.cu"), "-o", "add.o")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert "-arch=sm_90" in rec["removed"] and "-march=native" in rec["removed"]
    cmd = rec["command"][1:] if rec["command"][0] == shutil.which("ccache") else rec["command"]
    assert "-Xcompiler=-O3" in cmd and cmd[0] == "nvcc"  # cached like every unit (when ccache is there)


def _no_ccache(lines):
    return [x for x in lines if not x.startswith("ccache\t")]


@pytest.mark.skipif(shutil.which("ccache") is None, reason="ccache is not installed")
def test_a_unit_compiled_through_the_local_cache_is_the_one_compiled_without_it(shim, tmp_path):
    """A fork build runs every unit through ccache where it is installed. ccache's base_dir (set for a remote cache
    only, where builders at other paths share entries) has the compiler see relative, normalised paths, which the
    prefix maps do not cover; with a local cache the compiler must see what it sees without ccache, or a variant built
    before ccache was installed and one built after differ in their protected units (`__FILE__`, as in ik's
    GGML_ASSERT, through a header found by way of a `dir/.` include path as CMake writes them)."""
    from amxforge.cache import ccache_settings
    exe, conf, _, tree = shim
    ledger = next(line.split("\t")[1] for line in conf.read_text().splitlines() if line.startswith("ledger\t"))
    os.makedirs(os.path.dirname(ledger), exist_ok=True)
    (tree / "ggml/src/where.h").write_text("static const char *where(void) { return __FILE__; }\n")
    source = tree / "ggml/src/where.c"
    source.write_text('#include "where.h"\nconst char *here(void) { return where(); }\n'
                      "const char *self_(void) { return __FILE__; }\n")
    binary = tmp_path / "cmake binary dir"
    binary.mkdir()

    def compile_(config, env, name):
        res = subprocess.run([str(exe), str(config), "gcc", f"-I{tree / 'ggml/src'}/.", "-c", str(source), "-o", name],
                             cwd=binary, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return (binary / name).read_bytes()

    base = os.path.commonpath([tree, binary])  # as the driver passes it: the project's and the tree's
    settings, _ = ccache_settings(shutil.which("ccache"), None, None, base, tmp_path / "stats.log", print)
    cached = compile_(conf, {**os.environ, **settings, "CCACHE_DIR": str(tmp_path / "ccache")}, "cached.o")
    plain = compile_(_altered(shim, tmp_path, _no_ccache), dict(os.environ), "plain.o")
    assert cached == plain
    assert b"where.h" in plain and str(tree).encode() not in plain  # the prefix map held


@pytest.mark.parametrize("compiler,source,ccache,expect_head,expect_dist", [
    ("g++", "tools/bench/bench.cpp", True, ["ccache", "g++"], "icecc"),  # icecc is ccache's prefix
    ("g++", "tools/bench/bench.cpp", False, ["/usr/bin/icecc", "g++"], "icecc"),  # icecc is the launcher
    ("nvcc", "ggml/src/ggml-cuda/add.cu", True, ["ccache", "nvcc"], "local: icecream distributes gcc/clang only"),
    ("nvcc", "ggml/src/ggml-cuda/add.cu", False, ["nvcc"], "local: icecream distributes gcc/clang only"),
])
def test_dist_icecc_chains_icecc_for_gcc_units_only(shim, tmp_path, compiler, source, ccache, expect_head,
                                                     expect_dist):
    """Under dist=icecc the driver sets AMXFORGE_ICECC and AMXFORGE_ICECC_LOGS; the shim puts icecc after ccache
    (CCACHE_PREFIX) or in front of the compiler, asks for a per-unit icecc log, and leaves CUDA units to this host."""
    _, _, _, tree = shim
    if ccache and not shutil.which("ccache"):
        pytest.skip("ccache is not installed: the config has no ccache record")
    config = _altered(shim, tmp_path, lambda ls: ls if ccache else _no_ccache(ls))
    env = dict(os.environ, AMXFORGE_SHIM_DRY_RUN="1", AMXFORGE_ICECC="/usr/bin/icecc",
               AMXFORGE_ICECC_LOGS=str(tmp_path))
    res = subprocess.run([str(shim[0]), str(config), compiler, "-c", str(tree / source), "-o", "x.o"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    head = [os.path.basename(a) if a == shutil.which("ccache") else a for a in rec["command"][:len(expect_head)]]
    assert head == expect_head and rec["dist"] == expect_dist
    if expect_dist == "icecc":
        assert rec["icecc_log"].startswith(str(tmp_path) + "/") and rec["icecc_log"].endswith(".log")
    else:
        assert rec["icecc_log"] is None


def _altered(shim, tmp_path, edit):
    _, conf, _, _ = shim
    lines = conf.read_text().splitlines()
    path = tmp_path / "altered.conf"
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda ls: [x for x in ls if not (x.startswith("rule\t") and "\t**\t" in x)], "no class rule matches"),
    (lambda ls: [x for x in ls if not x.startswith("class\tprotected")], "a rule names a class without flags"),
    (lambda ls: ls + ["owned" + "\t-mx" * 600], "more than 512 fields"),
    (lambda ls: ls + ["rule\tbroken\tdefault"], "a rule record needs id, class, glob and regex"),
    (lambda ls: [x for x in ls if not x.startswith("policy\t")], "config lacks root, ledger, variant or policy"),
])
def test_configs_that_do_not_fit_are_refused(shim, tmp_path, edit, message):
    _, _, _, tree = shim
    res = dry(shim, "gcc", "-c", str(tree / "ggml/src/ggml.c"), "-o", "x.o", config=_altered(shim, tmp_path, edit))
    assert res.returncode == 2 and message in res.stderr and res.stdout == ""
