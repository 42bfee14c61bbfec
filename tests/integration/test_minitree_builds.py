"""Real scons builds of tests/fixtures/minitree for several variants; compile_commands.json, policy.json, the
audit (clean, and on deliberately leaking builds), up-to-date checks, and the bad-input paths."""

import json
import os
import stat
import subprocess

import pytest

from conftest import FIXTURES, HOST, run, scons, tool, variant_runs_here

AMX_ON = {"-mamx-tile", "-mamx-int8", "-mamx-bf16"}
AMX_OFF = {"-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"}
AVX512 = ["-mavx512f", "-mavx512cd", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni", "-mavx512bf16",
          "-mavx512vbmi", "-mavx512vbmi2"]


def commands(project, variant):
    entries = json.loads((project / "build" / variant / "compile_commands.json").read_text())
    return {os.path.relpath(e["file"], project): e["arguments"] for e in entries}


def audit(project, variant):
    res = run([tool("amxforge"), "audit", "--variant", variant, "--json"], cwd=project)
    return res.returncode, json.loads(res.stdout) if res.stdout.startswith("{") else res


@pytest.fixture(scope="module")
def built(minitree_copy):
    """One project, three variants built one after the other with no clean."""
    project = minitree_copy()
    for variant in ("baseline", "avx512", "amx"):
        res = scons(project, f"variant={variant}")
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"built variant {variant}" in res.stdout
    return project


def test_compile_commands_carry_each_units_final_flags(built):
    amx = commands(built, "amx")
    assert set(amx) == {"src/main.c", "src/vec.c", "src/matmul_amx.c", "src/iqk/fa/fa_128_128.c",
                        "src/portable/check.c"}
    assert AMX_ON <= set(amx["src/matmul_amx.c"]) and set(AVX512) <= set(amx["src/matmul_amx.c"])
    fa = amx["src/iqk/fa/fa_128_128.c"]
    assert set(AVX512) <= set(fa) and AMX_OFF <= set(fa) and not AMX_ON & set(fa)
    assert not AMX_ON & set(amx["src/vec.c"]) and not AMX_ON & set(amx["src/main.c"])
    portable = amx["src/portable/check.c"]
    assert "-march=x86-64" in portable and not any(f.startswith("-mavx") for f in portable)
    base = commands(built, "baseline")
    assert not any(f.startswith(("-mavx512", "-mamx")) for args in base.values() for f in args)


def test_variants_never_share_object_paths(built):
    outs = [e["output"] for v in ("baseline", "avx512", "amx")
            for e in json.loads((built / "build" / v / "compile_commands.json").read_text())]
    assert len(outs) == len(set(outs))
    policy = json.loads((built / "build" / "amx" / "policy.json").read_text())
    assert {u["unit_class"] for u in policy["units"]} == {"amx", "protected", "portable", "default"}


def test_rebuild_with_nothing_changed_does_nothing(built):
    for variant in ("baseline", "amx"):  # both still up to date after building the other
        assert scons(built, f"variant={variant}", "-q").returncode == 0
    (built / "src" / "vec.c").write_text((built / "src" / "vec.c").read_text() + "\n/* touched */\n")
    assert scons(built, "variant=amx", "-q").returncode != 0
    assert scons(built, "variant=amx").returncode == 0
    assert scons(built, "variant=amx", "-q").returncode == 0


def test_audits_are_clean_and_protected_objects_identical(built):
    for variant in ("baseline", "avx512", "amx"):
        rc, result = audit(built, variant)
        assert rc == 0 and result["ok"] and result["findings"] == [], result
    _, amx = audit(built, "amx")
    assert {"with": "avx512", "objects": 1, "identical": 1} in amx["compared"]


def test_scons_audit_target(built):
    res = scons(built, "variant=amx", "audit")
    assert res.returncode == 0 and "clean" in res.stdout


@pytest.mark.parametrize("variant,expected", [
    ("baseline", {"vec": "avx2", "amx": "none"}),
    ("amx", {"vec": "avx512", "fa": "fancy", "amx": "amx", "dot": 2016.0, "max": 63.0}),
])
def test_binaries_report_their_code_paths(built, variant, expected):
    ok, why = variant_runs_here(variant)
    if not ok:
        pytest.skip(f"variant {variant} cannot run on this host: {why}")
    out = json.loads(run([str(built / "build" / variant / "bin" / "minitree")], check=True).stdout)
    assert expected.items() <= out.items()


def test_audit_catches_leaks(minitree_copy):
    project = minitree_copy("leaky")
    assert scons(project, "variant=avx512").returncode == 0
    for variant in ("baseline", "amx"):
        res = scons(project, f"variant={variant}", "leak=1")
        assert res.returncode == 0, res.stderr
    rc, base = audit(project, "baseline")
    assert rc == 1 and not base["ok"]
    seen = {(f["object"].split("/obj/")[1], f["unit_class"]) for f in base["findings"]}
    assert ("src/leak/leak_tile.o", "default") in seen  # tile instruction in a non-amx object
    if "avx512f" in HOST:  # -march=native brought zmm into baseline objects
        assert ("src/vec.o", "default") in seen
        assert any("zmm" in f["instruction"] for f in base["findings"])
    tile = next(f for f in base["findings"] if f["object"].endswith("leak_tile.o"))
    assert tile["instruction"] == "tilerelease" and tile["rule"] == "everything-else"
    rc, amx = audit(project, "amx")
    assert rc == 1
    if "avx512_fp16" in HOST:  # -march=native changed the protected FA object: no longer identical to avx512
        assert any(f["unit_class"] == "protected" and "differs from" in f["problem"] for f in amx["findings"])
    human = run([tool("amxforge"), "audit", "--variant", "baseline"], cwd=project)
    assert human.returncode == 1 and "FAIL build/baseline/obj/src/leak/leak_tile.o: class default" in human.stdout


def test_audit_catches_a_portable_unit_built_beyond_x86_64(minitree_copy):
    project = minitree_copy("leakyportable")
    assert scons(project, "variant=baseline", "leak_portable=1").returncode == 0
    rc, result = audit(project, "baseline")
    assert rc == 1
    finding = next(f for f in result["findings"] if f["object"].endswith("portable/check.o"))
    assert finding["unit_class"] == "portable" and "avx" in finding["problem"]
    # the same unit built by the policy alone is clean
    assert scons(project, "variant=baseline").returncode == 0
    assert audit(project, "baseline")[0] == 0


def test_partial_avx512_breaks_the_fa_unit_and_the_policy_set_does_not(tmp_path):
    """The fixture reproduces ik_llama.cpp #1299: -mavx512f -mavx512bw (GGML_AVX512=ON) fails, the complete set
    that the policy renders compiles."""
    src = FIXTURES / "minitree" / "src" / "iqk" / "fa" / "fa_128_128.c"
    partial = run(["gcc", "-O2", "-march=x86-64-v3", "-mavx512f", "-mavx512bw", "-c", str(src), "-o",
                   str(tmp_path / "p.o")])
    assert partial.returncode != 0 and "incompatible types" in partial.stderr
    ok = run(["gcc", "-O2", "-march=x86-64-v3", *AVX512, "-c", str(src), "-o", str(tmp_path / "ok.o")])
    assert ok.returncode == 0, ok.stderr


def test_unknown_variant_one_line_and_nothing_written(minitree_copy):
    project = minitree_copy("bad")
    res = scons(project, "variant=avx1024")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "amxforge: error: unknown variant 'avx1024'; valid variants: baseline, avx512, amx, native, cuda, "
        "amx-cuda, auto"]
    assert not (project / "build").exists()


def test_unclassed_amx_unit_stops_the_build(minitree_copy):
    project = minitree_copy("sneaky")
    res = scons(project, "variant=amx", "sneaky=1")
    assert res.returncode == 2 and "src/sneaky/sneaky.c:4: uses AMX intrinsics ('__AMX_TILE__')" in res.stderr
    assert not (project / "build").exists()


def test_compiler_too_old(minitree_copy, tmp_path):
    fake = tmp_path / "gcc-10"
    fake.write_text('#!/bin/sh\ncase "$1" in -dumpfullversion) echo 10.2.0;; --version) echo "gcc (fake) 10.2.0";;'
                    ' *) exec gcc "$@";; esac\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    project = minitree_copy("oldcc")
    res = scons(project, "variant=amx", f"CC={fake}")
    assert res.returncode == 2
    assert f"gcc 10.2.0 ({fake}) does not accept -march=x86-64-v3 (x86-64-v3 needs gcc >= 11)" in res.stderr
    assert not (project / "build").exists()


def test_malformed_toml_stops_scons_with_file_and_line(minitree_copy, tmp_path):
    import shutil
    from conftest import ROOT
    root = tmp_path / "root"
    shutil.copytree(ROOT / "toolchain", root / "toolchain")
    shutil.copytree(ROOT / "templates", root / "templates")
    (root / "toolchain" / "classes.toml").write_text("classes = [\"amx\"\n[[rules]]\n")
    project = minitree_copy("badtoml")
    res = scons(project, "variant=amx", env={"AMXFORGE_ROOT": str(root)})
    assert res.returncode == 2
    assert "classes.toml: malformed TOML" in res.stderr and "line" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_amx_variant_for_a_host_without_amx_builds_and_says_so(minitree_copy):
    project = minitree_copy("noamx")
    res = scons(project, "variant=amx",
                env={"AMXFORGE_CPUINFO": str(FIXTURES / "cpuinfo" / "desktop_avx2.txt")})
    assert res.returncode == 0, res.stderr
    assert "variant amx builds here, but its binaries will not run on this host: CPU lacks" in res.stdout
    assert "amx_tile" in res.stdout and (project / "build" / "amx" / "bin" / "minitree").is_file()


def test_flags_command_explains_a_unit(built):
    res = run([tool("amxforge"), "flags", "--variant", "amx", "--json", "src/iqk/fa/fa_128_128.c",
               "src/matmul_amx.c"], cwd=built, check=True)
    fa, amx = [json.loads(line) for line in res.stdout.splitlines()]
    assert fa["unit_class"] == "protected" and fa["rule"] == "iqk-flash-attention"
    assert AMX_OFF <= set(fa["flags"]) and amx["unit_class"] == "amx" and AMX_ON <= set(amx["flags"])
    bad = run([tool("amxforge"), "flags", "--variant", "amx", "missing.c"], cwd=built)
    assert bad.returncode == 2 and bad.stderr.strip() == "amxforge: error: missing.c: no such file"


def test_scons_help_lists_the_variables():
    from conftest import ROOT
    out = subprocess.run([tool("scons"), "-h"], cwd=ROOT, capture_output=True, text=True).stdout
    for var in ("variant:", "cuda_arch:", "jobs:", "CC:", "verbose:", "fork:", "fork_targets:"):
        assert var in out
    from amxforge.policy import Policy
    assert f"({'|'.join(Policy().variants.names)})" in out  # an EnumVariable: its values from variants.toml
