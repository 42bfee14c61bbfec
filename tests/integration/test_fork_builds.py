"""Real CMake + ninja builds of tests/fixtures/minifork through `scons variant=V fork=...`: the ledger, the audit,
the installed binaries, ccache reuse across variants, the bad inputs, and a resumed interrupted build."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SITE, make_project, run, tool, variant_runs_here

AMX_ON = {"-mamx-tile", "-mamx-int8", "-mamx-bf16"}
AMX_OFF = {"-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"}
AVX512 = {"-mavx512f", "-mavx512cd", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni", "-mavx512bf16",
          "-mavx512vbmi", "-mavx512vbmi2"}


def scons(project, *args, env=None):
    return run([tool("scons"), "-Q", f"--site-dir={SITE}", *args], cwd=project, env=env)


def ledger(project, variant):
    from amxforge.fork.ledger import read_ledger
    return {e["source"]: e for e in read_ledger(project / "build" / variant / "fork" / "ledger.jsonl")}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("fork"))
    env = {"CCACHE_DIR": str(project / "ccache")}
    for variant in ("baseline", "avx512", "amx"):
        res = scons(project, f"variant={variant}", "fork=minifork", "fork_targets=llama-bench,llama-cli", env=env)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return project


def test_ledger_shows_each_unit_with_its_class_flags(built):
    amx = ledger(built, "amx")
    assert set(amx) == {"ggml/src/ggml.c", "ggml/src/ggml-backend.cpp", "ggml/src/iqk/iqk_flash_attn.cpp",
                        "ggml/src/iqk/iqk_mul_mat.cpp",
                        "ggml/src/iqk/fa/iqk_fa_64_64.cpp",
                        "ggml/src/iqk/fa/iqk_fa_128_128.cpp", "ggml/src/ggml-cpu/amx/mmq.cpp",
                        "tools/bench/bench.cpp", "tools/bench/cli.cpp"}
    for fa in ("ggml/src/iqk/fa/iqk_fa_64_64.cpp", "ggml/src/iqk/fa/iqk_fa_128_128.cpp"):
        entry = amx[fa]
        assert (entry["class"], entry["rule"]) == ("protected", "iqk-flash-attention")
        final = set(entry["command"])
        assert AVX512 <= final and AMX_OFF <= final and not AMX_ON & final
        assert {"-mf16c", "-mfma", "-mavx", "-mavx2"} <= set(entry["removed"])  # the fork's own ARCH_FLAGS
    for unit in ("ggml/src/ggml-cpu/amx/mmq.cpp", "ggml/src/ggml-backend.cpp"):  # the registry needs AMX macros too
        assert amx[unit]["class"] == "amx" and AMX_ON <= set(amx[unit]["command"])
    others = [e for s, e in amx.items() if e["class"] != "amx"]
    assert others and not any(AMX_ON & set(e["command"]) for e in others)
    base = ledger(built, "baseline")
    assert "ggml/src/ggml-cpu/amx/mmq.cpp" not in base  # no AMX backend in a variant without AMX
    assert not any(f.startswith(("-mavx512", "-mamx")) for e in base.values() for f in e["command"])


def test_compile_commands_include_fork_units_with_final_flags(built):
    entries = json.loads((built / "build" / "amx" / "compile_commands.json").read_text())
    fork = [e for e in entries if "minifork" in e["file"]]
    assert len(fork) == 9 and all(os.path.isabs(e["file"]) for e in fork)
    fa = next(e for e in fork if e["file"].endswith("iqk_fa_128_128.cpp"))
    assert AMX_OFF <= set(fa["arguments"]) and "-march=native" not in fa["arguments"]
    assert any(e["file"].endswith("gemm_amx.c") for e in entries)  # the kernels are there too


def test_audits_clean_and_fa_objects_identical_between_avx512_and_amx(built):
    for variant in ("baseline", "avx512", "amx"):
        res = run([tool("amxforge"), "audit", "--variant", variant, "--json"], cwd=built)
        result = json.loads(res.stdout)
        assert res.returncode == 0 and result["ok"], result["findings"]
        assert result["by_class"]["protected"] == 3 and result["by_class"]["amx"] >= 4
    amx = json.loads(run([tool("amxforge"), "audit", "--variant", "amx", "--json"], cwd=built).stdout)
    assert {"with": "avx512", "objects": 3, "identical": 3} in amx["compared"]


def test_installed_binaries_run_their_code_paths(built):
    assert (built / "build" / "amx" / "lib" / "libggml.so").is_file()
    if variant_runs_here("baseline")[0]:
        base = json.loads(run([str(built / "build" / "baseline" / "bin" / "llama-bench")], check=True).stdout)
        assert (base["fa"], base["amx_compiled"]) == ("avx2", "none")
    if variant_runs_here("avx512")[0]:
        assert "fa=fancy" in run([str(built / "build" / "avx512" / "bin" / "llama-cli")], check=True).stdout
    ok, why = variant_runs_here("amx")
    if not ok:
        pytest.skip(f"the amx binaries cannot run on this host: {why}")
    amx = json.loads(run([str(built / "build" / "amx" / "bin" / "llama-bench")], check=True).stdout)
    assert (amx["fa"], amx["amx_compiled"], amx["amx_ran"], amx["amx_result"]) == ("fancy", "amx", True, 64)
    assert amx["amx_registered"] is True  # not silently compiled out of the backend registry


@pytest.mark.skipif(shutil.which("ccache") is None, reason="ccache is not installed")
def test_ccache_compiles_identical_units_once(built):
    summary = json.loads((built / "build" / "amx" / "fork" / "amxforge-build.json").read_text())
    # the three protected units (and the other non-AMX ones) were compiled for avx512 with the same final command
    assert summary["ccache"]["hits"] >= 3, summary


def live_ledger(project, variant):
    found = list((project / "build" / variant / "fork-work").glob("*/ledger.live.jsonl"))
    assert len(found) <= 1, found
    return found[0] if found else project / "build" / variant / "fork-work" / "none"


def test_rebuild_does_not_recompile(built):
    before = live_ledger(built, "amx").read_text().count("\n")
    res = scons(built, "variant=amx", "fork=minifork", "fork_targets=llama-bench,llama-cli")
    assert res.returncode == 0
    assert live_ledger(built, "amx").read_text().count("\n") == before
    # and nothing is out of date: `scons -q` agrees
    assert scons(built, "-q", "variant=amx", "fork=minifork", "fork_targets=llama-bench,llama-cli").returncode == 0


@pytest.mark.parametrize("args,message", [
    (["fork=nowhere"], "fork=nowhere: no such directory"),
    (["fork=kernels"], "fork=kernels: not a tree amxforge knows ("),
    (["fork=minifork", "fork_targets="], "fork_targets is empty"),
])
def test_bad_fork_input_one_line(tmp_path, args, message):
    project = make_project(tmp_path)
    res = scons(project, "variant=avx512", *args)
    assert res.returncode == 2 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (project / "build").exists()


@pytest.mark.parametrize("target,what", [
    ("llama-server", "llama-server is not a target of"),
    ("libggml.so", "libggml.so is the file of a shared library target (ggml) of"),  # once installed as bin/libggml.so
    ("ggml", "ggml is a shared library target of"),
])
def test_fork_targets_are_programs_and_the_error_lists_them(tmp_path, target, what):
    """From CMake's File API: fork_targets names programs; the error lists the tree's programs, not ninja's
    internals (CMakeCache.txt, cmake_object_order_depends_target_*), and nothing is installed."""
    project = make_project(tmp_path)
    res = scons(project, "variant=baseline", "fork=minifork", f"fork_targets={target}")
    assert res.returncode == 2, res.stderr
    error = next(line for line in res.stderr.splitlines() if line.startswith("amxforge: error:"))
    assert what in error and "takes its programs: llama-bench, llama-cli, llama-sweep-bench" in error, error
    assert "CMakeCache" not in error and "cmake_object_order" not in error
    assert not (project / "build" / "baseline" / "bin" / target).exists()
    assert not (project / "build" / "baseline" / "fork" / "amxforge-build.json").exists()


@pytest.mark.parametrize("cmake, says", [
    ('message(FATAL_ERROR "minifork needs libfoo >= 2")', ["minifork needs libfoo >= 2"]),
    # CMake spreads this one over several indented lines, the missing target in the middle (a CUDA tree on a
    # builder without cuBLAS: 'Target "ggml" links to: CUDA::cublas but the target was not found')
    ("target_link_libraries(llama-bench PRIVATE Missing::cublas)",
     ['Target "llama-bench" links to: Missing::cublas but the target was not found']),
    # the same for one of CMake's CUDA targets (the tree never asks FindCUDAToolkit, so it is missing on any host):
    # the line names the toolkit's part to install (toolchain/cuda.toml [toolkit_parts])
    ("target_link_libraries(llama-bench PRIVATE CUDA::cublas)",
     ["links to: CUDA::cublas but the target was not found", "lacks cuBLAS (libcublas.so", "install it, or build a "
      "variant without CUDA"]),
])
def test_configure_failure_shows_the_forks_error_and_the_log(tmp_path, cmake, says):
    project = make_project(tmp_path)
    cml = project / "minifork" / "CMakeLists.txt"
    cml.write_text(cml.read_text() + f"\n{cmake}\n")
    res = scons(project, "variant=baseline", "fork=minifork")
    assert res.returncode != 0
    error = next(line for line in res.stderr.splitlines() if line.startswith("amxforge: error:"))
    assert "CMake configure of" in error and all(s in error for s in says), error
    assert "cmake-configure.log" in res.stderr
    assert len(list((project / "build/baseline/fork-work").glob("*/cmake-configure.log"))) == 1


def test_partial_avx512_in_the_fork_is_overridden(tmp_path):
    """GGML_AVX512=ON would break the FA unit (#1299); the shim strips the partial set and adds the complete one."""
    project = make_project(tmp_path)
    cml = project / "minifork" / "CMakeLists.txt"
    cml.write_text(cml.read_text().replace('option(GGML_AVX512 "ggml: enable AVX512 (F and BW only, as the fork does)" OFF)',
                                           'set(GGML_AVX512 ON)'))
    res = scons(project, "variant=avx512", "fork=minifork")
    assert res.returncode == 0, res.stderr[-2000:]
    fa = ledger(project, "avx512")["ggml/src/iqk/fa/iqk_fa_128_128.cpp"]
    assert {"-mavx512f", "-mavx512bw"} <= set(fa["removed"]) and AVX512 <= set(fa["added"])


def test_interrupted_build_resumes(tmp_path):
    project = make_project(tmp_path)
    proc = subprocess.Popen([tool("scons"), "-Q", f"--site-dir={SITE}", "variant=avx512", "fork=minifork", "jobs=1"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (live_ledger(project, "avx512").is_file() and
                                          live_ledger(project, "avx512").read_text().count("\n") >= 1):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    res = scons(project, "variant=avx512", "fork=minifork")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert len(ledger(project, "avx512")) == 7  # llama-bench alone: no cli.cpp, no AMX unit in avx512
    assert run([tool("amxforge"), "audit", "--variant", "avx512"], cwd=project).returncode == 0
    assert (project / "build" / "avx512" / "bin" / "llama-bench").is_file()


def test_cuda_units_get_gencode_and_host_flags_through_xcompiler(tmp_path):
    if shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"):
        pytest.skip("no nvcc on this host")
    project = make_project(tmp_path)
    res = scons(project, "variant=amx-cuda", "fork=minifork", "cuda_arch=90")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cu = ledger(project, "amx-cuda")["ggml/src/ggml-cuda/add.cu"]
    assert cu["class"] == "cuda"
    final = cu["command"]
    assert "-gencode=arch=compute_90,code=sm_90" in final and "-gencode=arch=compute_90,code=compute_90" in final
    assert "-Xcompiler=-mavx512f" in final
    assert not any(f.removeprefix("-Xcompiler=").startswith("-mamx") for f in final)  # AMX flags only on AMX units
    assert not any("native" in f for f in final)
    assert any(r.startswith("--generate-code") or r.startswith("-gencode") or r == "-arch" for r in cu["removed"]) \
        or any(r in ("-mf16c", "-mavx2") for r in cu["removed"])


def test_no_gpu_and_no_cuda_arch_says_how(tmp_path):
    from amxforge.probe import probe
    if probe()["cuda"]["devices"]:
        pytest.skip("this host has a GPU")
    project = make_project(tmp_path)
    res = scons(project, "variant=cuda", "fork=minifork")
    assert res.returncode == 2 and "no CUDA device visible" in res.stderr and "cuda_arch=90" in res.stderr


def test_fork_unit_with_amx_intrinsics_outside_the_amx_class_stops_the_build(tmp_path):
    project = make_project(tmp_path)
    src = project / "minifork" / "ggml" / "src"
    (src / "sneaky.cpp").write_text("#include <immintrin.h>\nvoid sneaky() {\n#if defined(__AMX_TILE__)\n"
                                    "    _tile_release();\n#endif\n}\n")
    cml = src / "CMakeLists.txt"
    cml.write_text(cml.read_text().replace("set(GGML_SOURCES ggml.c", "set(GGML_SOURCES ggml.c sneaky.cpp"))
    res = scons(project, "variant=amx", "fork=minifork")
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "sneaky.cpp:3: uses AMX intrinsics ('__AMX_TILE__') but is classed default by rule 'everything-else'" in out


def test_protected_units_are_not_compared_across_different_forks(tmp_path):
    """build/avx512 from one tree and build/amx from another: their FA units differ and must not be compared."""
    project = make_project(tmp_path)
    shutil.copytree(project / "minifork", project / "otherfork")
    fa = project / "otherfork" / "ggml" / "src" / "iqk" / "fa" / "iqk_fa_64_64.cpp"
    fa.write_text(fa.read_text().replace("return fa_row_max<64>(x, n);", "return fa_row_max<64>(x, n) + 1.0f;"))
    assert scons(project, "variant=avx512", "fork=minifork").returncode == 0
    assert scons(project, "variant=amx", "fork=otherfork").returncode == 0
    result = json.loads(run([tool("amxforge"), "audit", "--variant", "amx", "--json"], cwd=project).stdout)
    assert result["ok"], result["findings"]
    assert all(c["with"] != "avx512" for c in result["compared"])  # no fork unit compared across trees


def test_a_kind_added_as_a_row_builds_with_its_own_default_target(tmp_path):
    """whisper.cpp is a row of toolchain/forks.toml plus tests/fixtures/miniwhisper: detected as itself (it once
    passed for llama.cpp), built with its kind's default target (whisper-bench), its ggml-cpu unit classed amx."""
    project = make_project(tmp_path)
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "miniwhisper", project / "miniwhisper")
    res = scons(project, "variant=baseline", "fork=miniwhisper")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    record = json.loads((project / "build" / "baseline" / "fork" / "amxforge-build.json").read_text())
    assert record["fork"]["kind"] == "whisper.cpp" and record["targets"] == ["whisper-bench"]
    ledger = [json.loads(x) for x in (project / "build" / "baseline" / "fork" / "ledger.jsonl").read_text().splitlines()]
    assert {e["source"]: e["class"] for e in ledger}["ggml/src/ggml-cpu/ggml-cpu.c"] == "amx"
    assert run([tool("amxforge"), "audit", "--variant", "baseline"], cwd=project).returncode == 0
    ok, why = variant_runs_here("baseline")
    if ok:
        out = run([str(project / "build" / "baseline" / "bin" / "whisper-bench")], check=True).stdout
        assert json.loads(out) == {"encode": 1024.0, "cpu": "AVX2"}
