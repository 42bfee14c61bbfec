"""`amxforge package` of the kernels and tests/fixtures/minifork for baseline, avx512 and amx, on whatever host runs
the tests: the manifest against its schema, the selector's choice computed from the host, forced and simulated
hosts, the host preference file, damaged releases, reproducibility from two checkouts, and the bad inputs."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import HOST, ROOT, killable_env, make_project, run, tool, variant_runs_here

VARIANTS = ["baseline", "avx512", "amx"]
TARGETS = ["amxforge-kbench", "amxforge-selftest", "llama-bench", "llama-cli"]
ARGS = ["--variants", "baseline,avx512,amx", "--fork", "minifork", "--fork-targets", "llama-bench,llama-cli"]


def package(project, out, *extra, env=None):
    return run([tool("amxforge"), "package", *ARGS, "--out", str(out), *extra], cwd=project, env=env)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("pkg"))
    res = package(project, project / "rel", "--name", "minifork-test", "--version", "1.0", "--json",
                  env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert res.returncode == 0, res.stderr[-3000:]
    return project, project / "rel", json.loads(res.stdout)


def best_runnable() -> str:
    return next(v for v in VARIANTS[::-1] if variant_runs_here(v)[0])


def launch(rel, target="llama-bench", env=None):
    return run([str(rel / "bin" / target)], env=env)


def test_manifest_is_valid_and_describes_every_variant(release):
    jsonschema = pytest.importorskip("jsonschema")
    _, rel, summary = release
    manifest = json.loads((rel / "manifest.json").read_text())
    schema = json.loads((ROOT / "toolchain" / "schemas" / "manifest.schema.json").read_text())
    jsonschema.validate(manifest, schema, cls=jsonschema.Draft202012Validator)
    assert manifest["selection"] == ["amx", "avx512", "baseline"] and manifest["targets"] == TARGETS
    assert manifest["package"] == {"name": "minifork-test", "version": "1.0"}
    assert manifest["source"]["fork"]["kind"] == "ik_llama.cpp+amx" and manifest["source_date_epoch"] == 1700000000
    for name, variant in manifest["variants"].items():
        assert set(variant["audit_seen"]) <= set(variant["requires"]["features"])
        assert variant["requires"]["permission"] == (name == "amx")
    assert manifest["variants"]["baseline"]["psabi_level"] == "x86-64-v3"
    assert manifest["variants"]["baseline"]["glibc_hwcaps"] == "lib/glibc-hwcaps/x86-64-v3"
    assert (rel / "lib/glibc-hwcaps/x86-64-v3/libggml.so").is_file()
    for name in ("avx512", "amx"):  # beyond x86-64-v4: the manifest says why, and nothing is placed there
        assert manifest["variants"][name]["glibc_hwcaps"] is None
        assert "beyond x86-64-v4" in manifest["variants"][name]["glibc_hwcaps_why_not"]
    assert not (rel / "lib/glibc-hwcaps/x86-64-v4").exists()
    for f in manifest["files"]:  # every file's hash holds; identical ones are one inode
        path = rel / f["path"]
        assert path.stat().st_size == f["size"]
        if "link" in f:
            assert path.stat().st_ino == (rel / f["link"]).stat().st_ino
    assert manifest["size"]["stored"] < manifest["size"]["naive"] == sum(f["size"] for f in manifest["files"])
    assert summary["bytes_stored"] == manifest["size"]["stored"]


def test_the_selector_runs_the_best_variant_this_host_can(release):
    _, rel, _ = release
    expect = best_runnable()
    res = launch(rel, env={"AMXFORGE_EXPLAIN": "1"})
    assert res.returncode == 0, res.stderr
    assert f"llama-bench: running variant {expect}: " in res.stderr
    assert json.loads(res.stdout)["fa"] == ("avx2" if expect == "baseline" else "fancy")
    for name in VARIANTS:  # every better variant it passed over says why
        if VARIANTS.index(name) > VARIANTS.index(expect):
            assert f"llama-bench: variant {name}: " in res.stderr and "runs here" not in \
                res.stderr.split(f"variant {name}: ")[1].splitlines()[0]
    selftest = launch(rel, "amxforge-selftest")
    assert selftest.returncode == 0 and json.loads(selftest.stdout)["variant"] == expect


@pytest.mark.parametrize("forced", VARIANTS)
def test_amxforge_variant_forces_one_or_says_why_not(release, forced):
    _, rel, _ = release
    res = launch(rel, env={"AMXFORGE_VARIANT": forced})
    ok, _ = variant_runs_here(forced)
    if ok:
        assert res.returncode == 0, res.stderr
    else:
        assert res.returncode == 2 and res.stderr.startswith(f"llama-bench: variant {forced} cannot run on this host: ")
    assert launch(rel, env={"AMXFORGE_VARIANT": "avx1024"}).returncode == 2


def test_a_host_refusing_amx_permission_falls_to_the_next_variant(release):
    _, rel, _ = release
    res = launch(rel, env={"AMXFORGE_EXPLAIN": "1", "AMXFORGE_GUARD_HIDE": "amx_permission"})
    assert res.returncode == 0, res.stderr
    amx_line = next(line for line in res.stderr.splitlines() if "llama-bench: variant amx: " in line)
    if {"amx_tile", "amx_int8", "amx_bf16"} <= HOST and variant_runs_here("avx512")[0]:
        assert "Linux refused AMX permission" in amx_line
        assert "llama-bench: running variant avx512: " in res.stderr
    else:  # this host lacks more than the permission: the verdict names it, the choice follows the host
        assert "this CPU lacks" in amx_line
        expect = next(v for v in ("avx512", "baseline") if variant_runs_here(v)[0])
        assert f"llama-bench: running variant {expect}: " in res.stderr


# XCR0 states an OS (or a VM) can leave off: the variants that need it are skipped with the reason, the next one runs
XCR0_CASES = {"xcr0_tile": ({"amx"}, "AMX tile"), "xcr0_avx512": ({"amx", "avx512"}, "AVX-512"),
              "xcr0_avx": ({"amx", "avx512", "baseline"}, "AVX")}


@pytest.mark.parametrize("hide", sorted(XCR0_CASES))
def test_a_host_with_an_xcr0_state_off_skips_the_variants_needing_it(release, hide):
    _, rel, _ = release
    needing, label = XCR0_CASES[hide]
    res = launch(rel, env={"AMXFORGE_EXPLAIN": "1", "AMXFORGE_GUARD_HIDE": hide})
    expect = next((v for v in VARIANTS[::-1] if v not in needing and variant_runs_here(v)[0]), None)
    for name in needing:  # each says why: the OS state, or (first) the CPU features this host lacks anyway
        line = next(line for line in res.stderr.splitlines() if line.startswith(f"llama-bench: variant {name}: "))
        assert ("this CPU lacks" in line if not variant_runs_here(name)[0] else
                f"the OS has not enabled the {label} register state" in line), line
    if expect is None:
        assert res.returncode == 2 and "llama-bench: no variant of this build runs on this host: " in res.stderr
        assert res.stdout == ""
    else:
        assert res.returncode == 0, res.stderr
        assert f"llama-bench: running variant {expect}: " in res.stderr


def test_a_kernel_refusing_amx_permission_for_real(release, tmp_path):
    """Not the guard's simulation: a seccomp filter (tests/fixtures/deny_amx_permission) makes the kernel refuse
    arch_prctl(ARCH_REQ_XCOMP_PERM) with EPERM, as a locked-down container can; the selector falls to avx512."""
    from conftest import FIXTURES
    deny = tmp_path / "deny_amx_permission"
    run(["gcc", "-O2", "-o", str(deny), str(FIXTURES / "deny_amx_permission" / "deny_amx_permission.c")], check=True)
    _, rel, _ = release
    res = run([str(deny), str(rel / "bin" / "llama-bench")], env={"AMXFORGE_EXPLAIN": "1"})
    assert res.returncode == 0, res.stderr
    if not variant_runs_here("amx")[0]:
        assert f"llama-bench: running variant {best_runnable()}: " in res.stderr
        pytest.skip("this host cannot run amx anyway: the refusal changes nothing here (checked on the AMX host)")
    assert ("llama-bench: variant amx: Linux refused AMX permission: arch_prctl(ARCH_REQ_XCOMP_PERM) failed: "
            "Operation not permitted") in res.stderr
    assert "llama-bench: running variant avx512: " in res.stderr


def test_the_host_preference_file_reorders_runnable_variants(release, tmp_path):
    _, rel, _ = release
    pref = tmp_path / "preference"
    pref.write_text("# tried first where they run\nsomething-else amx\nminifork-test baseline avx512\n")
    res = launch(rel, env={"AMXFORGE_PREFERENCE": str(pref), "AMXFORGE_EXPLAIN": "1"})
    assert res.returncode == 0 and "llama-bench: running variant baseline: " in res.stderr
    assert f"the host preference ({pref}) puts first: baseline avx512" in res.stderr
    pref.write_text("* amx\n")  # a variant that cannot run here is passed over, not forced
    res = launch(rel, env={"AMXFORGE_PREFERENCE": str(pref), "AMXFORGE_EXPLAIN": "1"})
    assert res.returncode == 0 and f"llama-bench: running variant {best_runnable()}: " in res.stderr
    pref.unlink()
    os.mkfifo(pref)  # once: every start of every binary of the release hung here
    res = subprocess.run([str(rel / "bin" / "llama-bench")], env=dict(os.environ, AMXFORGE_PREFERENCE=str(pref),
                                                                      AMXFORGE_EXPLAIN="1"),
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 0 and "the host preference is ignored: " in res.stderr
    assert "is a FIFO, not a regular file" in res.stderr


@pytest.mark.parametrize("damage", ["delete", "flip", "manifest"])
def test_a_damaged_release_is_named_and_exit_2(release, tmp_path, damage):
    _, rel, _ = release
    copy = tmp_path / "rel"
    shutil.copytree(rel, copy, symlinks=True)
    chosen = best_runnable()
    victim = copy / "variants" / chosen / "lib" / "libggml.so"
    if damage == "delete":
        victim.unlink()
    elif damage == "flip":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.unlink()  # break the hard link: damage this copy only
        victim.write_bytes(bytes(data))
    else:
        victim = copy / "manifest.json"
        victim.write_text(victim.read_text().replace('"1.0"', '"1.1"'))
    res = launch(copy)
    assert res.returncode == 2 and str(victim) in res.stderr and "damaged" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""


def _reseal(table: Path, body: str) -> None:
    """Write `body` with a valid end line: the damage is then in the lines themselves."""
    import zlib
    table.write_text(body + f"end\t{body.count(chr(10))}\t{zlib.crc32(body.encode()):08x}\n")


@pytest.mark.parametrize("damage", ["cut-and-no-manifest", "file-line-gone-and-truncated", "resealed-no-manifest",
                                    "resealed-no-file-lines", "fifo-manifest"])
def test_the_release_table_is_checked_like_its_files(release, tmp_path, damage):
    """Issue 18 item 8: a table cut at a line boundary with manifest.json gone, or with one file line removed and
    that library truncated (which made the real binary die of SIGBUS), is damaged: exit 2, never run. A table
    resealed by hand still needs its manifest line and every variant's file lines; a FIFO never hangs it."""
    _, rel, _ = release
    copy = tmp_path / "rel"
    shutil.copytree(rel, copy, symlinks=True)
    table = copy / "share" / "amxforge" / "launch.tsv"
    lines = table.read_text().splitlines(keepends=True)
    chosen = best_runnable()
    lib = copy / "variants" / chosen / "lib" / "libggml.so"
    if damage == "cut-and-no-manifest":
        table.write_text("".join(l for l in lines if l.startswith(("amxforge-launch", "variant"))))
        (copy / "manifest.json").unlink()
    elif damage == "file-line-gone-and-truncated":
        table.write_text("".join(l for l in lines if f"variants/{chosen}/lib/libggml.so" not in l))
        data = lib.read_bytes()
        lib.unlink()
        lib.write_bytes(data[:len(data) // 3])
    elif damage == "resealed-no-manifest":
        _reseal(table, "".join(l for l in lines[:-1] if not l.startswith("manifest")))
    elif damage == "resealed-no-file-lines":
        _reseal(table, "".join(l for l in lines[:-1] if f"\tvariants/{chosen}/" not in l))
    else:
        (copy / "manifest.json").unlink()
        os.mkfifo(copy / "manifest.json")
    res = subprocess.run([str(copy / "bin" / "llama-bench")], capture_output=True, text=True, timeout=20)
    assert res.returncode == 2, (res.returncode, res.stderr)  # not -SIGBUS, not 0
    assert "damaged" in res.stderr and len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""
    if damage == "fifo-manifest":
        assert "is a FIFO, not a regular file" in res.stderr


def _gpu_release(release, tmp_path, sass="90", ptx="90", driver=13000):
    """A copy of the release whose table makes baseline (which every host runs) a CUDA variant tried first: the
    selector's GPU judgement, without a GPU or nvcc."""
    _, rel, _ = release
    copy = tmp_path / "rel"
    shutil.copytree(rel, copy, symlinks=True)
    table = copy / "share" / "amxforge" / "launch.tsv"
    lines = table.read_text().splitlines(keepends=True)[:-1]
    rows = [l for l in lines if l.startswith("variant\t")]
    gpu = next(l for l in rows if l.startswith("variant\tbaseline\t")).rstrip("\n") + \
        f"\tgpu\t{sass}\t{ptx}\t{driver}\n"
    body = [lines[0], gpu] + [l for l in rows if l is not gpu and not l.startswith("variant\tbaseline\t")] + \
        [l for l in lines[1:] if not l.startswith("variant\t")]
    _reseal(table, "".join(body))
    return copy


@pytest.mark.parametrize("needs,devices,runs,why", [
    ({}, "driver=13000;devices=9.0", True, None),                                     # SASS covers 9.0
    ({}, "driver=13000;devices=9.0,8.6", True, None),                                 # one device is enough
    ({}, "driver=13000;devices=8.6", False, "has GPU code for 90 (SASS) and PTX for 90 only"),
    ({}, "driver=13000;devices=12.0", True, None),                                    # PTX 9.0 JITs for 12.0
    ({"ptx": "-"}, "driver=13000;devices=12.0", False, "has GPU code for 90 (SASS) only"),
    ({"sass": "86"}, "driver=13000;devices=8.9", True, None),                         # same major, higher minor
    ({"sass": "120a", "ptx": "120a"}, "driver=13000;devices=12.1", False, "12.1"),    # arch-specific: exactly 12.0
    ({"sass": "120a", "ptx": "120a"}, "driver=13000;devices=12.0", True, None),
    ({}, "driver=12040;devices=9.0", False, "built with CUDA 13.0 and needs a driver at least that new; this one is 12.4"),
    ({}, "driver=13000;devices=", False, "the driver lists none"),
    ({}, "none", False, "libcuda.so.1 cannot be loaded"),
])
def test_a_cuda_variant_runs_only_where_a_device_and_the_driver_can(release, tmp_path, needs, devices, runs, why):
    """Issue 19: capability covered by SASS, by PTX, not at all; an arch-specific target; an old driver; no device;
    no driver. A simulated driver (AMXFORGE_GUARD_CUDA) stands in for libcuda."""
    copy = _gpu_release(release, tmp_path, **needs)
    res = launch(copy, env={"AMXFORGE_EXPLAIN": "1", "AMXFORGE_GUARD_CUDA": devices, "XDG_CACHE_HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert "CUDA: " in res.stderr  # the driver and devices are named
    if runs:
        assert "llama-bench: variant baseline: runs here" in res.stderr
        assert "llama-bench: running variant baseline: " in res.stderr
    else:
        verdict = next(line for line in res.stderr.splitlines() if line.startswith("llama-bench: variant baseline: "))
        assert why in verdict, verdict
        assert f"llama-bench: running variant {best_runnable()}: " in res.stderr or best_runnable() == "baseline"


def test_without_a_driver_here_the_selector_never_picks_a_cuda_variant(release, tmp_path):
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this host has an NVIDIA driver: the simulated cases above cover the verdicts")
    copy = _gpu_release(release, tmp_path)
    res = launch(copy, env={"AMXFORGE_EXPLAIN": "1", "XDG_CACHE_HOME": str(tmp_path)})
    assert res.returncode == 0 and "variant baseline: variant baseline needs an NVIDIA GPU: " in res.stderr


def test_the_stamp_spares_the_crc_until_a_file_changes(release, tmp_path):
    """Sizes at every start, CRC-32 once, then while the files' stamp (device, inode, size, mtime, ctime) holds; a
    file changed in place with its size and mtime kept (its ctime cannot be) is checked again and refused."""
    _, rel, _ = release
    copy = tmp_path / "rel"
    shutil.copytree(rel, copy, symlinks=False)
    env = {"AMXFORGE_EXPLAIN": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    first, second = launch(copy, env=env), launch(copy, env=env)
    assert "checked by CRC-32, stamp written" in first.stderr and first.returncode == 0
    assert "their stamp holds" in second.stderr and second.returncode == 0
    forced = launch(copy, env=dict(env, AMXFORGE_VERIFY="1"))
    assert "checked by CRC-32" in forced.stderr
    chosen = best_runnable()
    victim = copy / "variants" / chosen / "lib" / "libggml.so"
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    third = launch(copy, env=env)
    assert third.returncode == 2 and str(victim) in third.stderr and "does not match its checksum" in third.stderr


def test_one_preference_search_order_and_its_unusable_lines_said(release, tmp_path):
    """toolchain/selector.toml's order, read by the selector and by amxforge.preference alike: the user's file before
    the system one; EXPLAIN names the file and each line it could not use."""
    from amxforge.preference import read_path, search_order
    _, rel, _ = release
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    (home / ".config" / "amxforge").mkdir(parents=True)
    (xdg / "amxforge").mkdir(parents=True)
    (home / ".config" / "amxforge" / "preference").write_text("* avx512\n")
    (xdg / "amxforge" / "preference").write_text("minifork-test avx1024 baseline\nminifork-test nope\n"
                                                 "something-else amx\n")
    environ = {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}
    assert read_path(environ) == xdg / "amxforge" / "preference"
    assert search_order()[-1] == "/etc/amxforge/preference"
    res = launch(rel, env=dict(environ, AMXFORGE_EXPLAIN="1", XDG_CACHE_HOME=str(tmp_path / "c")))
    assert res.returncode == 0
    assert f"the host preference ({xdg / 'amxforge' / 'preference'}) puts first: avx1024 baseline" in res.stderr
    assert ":1: names no variant of this package: avx1024" in res.stderr
    assert ":2: names no variant of this package, not used" in res.stderr
    assert "llama-bench: running variant baseline: " in res.stderr


def test_verify_checks_the_whole_release_against_the_manifest(release, tmp_path):
    _, rel, _ = release
    assert run([tool("amxforge"), "verify", str(rel)]).returncode == 0
    copy = tmp_path / "rel"
    shutil.copytree(rel, copy, symlinks=False)
    victim = copy / "variants" / "avx512" / "libexec" / "llama-cli"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.unlink()
    victim.write_bytes(bytes(data))
    res = run([tool("amxforge"), "verify", str(copy), "--json"])
    assert res.returncode == 1
    assert json.loads(res.stdout)["bad"] == ["variants/avx512/libexec/llama-cli: its SHA-256 differs from the manifest's"]
    res = run([tool("amxforge"), "verify", str(tmp_path)])
    assert res.returncode == 2 and "not an amxforge release" in res.stderr


def test_the_startup_benchmark_reports_selector_and_direct_in_one_run(release):
    _, rel, _ = release
    res = run([sys.executable, str(ROOT / "benchmarks" / "selector_startup.py"), "--release", str(rel), "--target",
               "llama-bench", "--runs", "5"])
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["variant"] == best_runnable() and out["runs"] == 5
    assert out["selector_ms"] > 0 and out["direct_ms"] > 0 and "added_ms" in out


def test_two_checkouts_give_bit_identical_archives(release, tmp_path):
    """Another copy of the project at another path (a second builder), packaged with the same epoch."""
    first_project, rel, summary = release
    other = make_project(tmp_path / "elsewhere" / "deeper")
    res = package(other, other / "rel", "--name", "minifork-test", "--version", "1.0",
                  env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = Path(summary["archive"]), other / "rel.tar.gz"
    assert (rel / "manifest.json").read_bytes() == (other / "rel" / "manifest.json").read_bytes()
    assert a.read_bytes() == b.read_bytes()
    listing = subprocess.run(["tar", "tvzf", str(a)], capture_output=True, text=True, check=True).stdout
    assert " link to " in listing and "root" not in listing  # hard links kept; no owner names


# --- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["--variants", "baseline,avx1024"], "unknown variant 'avx1024' in --variants"),
    (["--variants", "native"], "this build host's own feature set"),
    (["--variants", ""], "--variants is empty"),
])
def test_bad_variants_are_one_line(tmp_path, args, fragment):
    project = make_project(tmp_path)
    res = run([tool("amxforge"), "package", *args, "--out", str(tmp_path / "rel")], cwd=project)
    assert res.returncode == 2 and fragment in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "rel").exists() and not (project / "build").exists()


def test_cuda_variants_are_packaged_with_the_archs_named_on_a_gpu_less_builder(tmp_path):
    """Issue 18 item 10: the advice on a GPU-less builder names package's own option, and it works."""
    from conftest import HOST_PROBE
    if not HOST_PROBE["variants"]["cuda"]["buildable"]:
        pytest.skip(f"variant cuda cannot be built here: {HOST_PROBE['variants']['cuda']['why']}")
    project = make_project(tmp_path, fork=False)
    args = ["amxforge", "package", "--variants", "baseline,cuda", "--out", str(tmp_path / "rel")]
    if not HOST_PROBE["cuda"]["devices"]:
        res = run([tool(args[0]), *args[1:]], cwd=project)
        assert res.returncode == 2 and "pass --cuda-arch 90" in res.stderr and not (project / "build").exists()
    res = run([tool(args[0]), *args[1:], "--cuda-arch", "90"], cwd=project)
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((tmp_path / "rel" / "manifest.json").read_text())
    assert manifest["variants"]["cuda"]["gpu"] is True and set(manifest["selection"]) == {"baseline", "cuda"}
    res = run([tool(args[0]), "package", "--variants", "baseline", "--cuda-arch", "90", "--out", str(tmp_path / "r2")],
              cwd=project)
    assert res.returncode == 2 and "leave --cuda-arch out" in res.stderr


def test_an_existing_out_is_refused_unless_forced(release, tmp_path):
    project, rel, _ = release
    res = package(project, rel)
    assert res.returncode == 2 and "holds an earlier release; add --force" in res.stderr
    res = package(project, rel, "--force", "--name", "minifork-test", "--version", "1.0",
                  env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((rel / "manifest.json").read_text())["package"]["version"] == "1.0"


def test_a_variant_this_compiler_cannot_build_is_refused(tmp_path):
    wrapper = tmp_path / "gcc-no-bf16"
    wrapper.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = "-mavx512bf16" ] && exit 1; done\nexec gcc "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    project = make_project(tmp_path / "p")
    res = run([tool("amxforge"), "package", *ARGS, "--out", str(tmp_path / "rel")], cwd=project,
              env={"CC": str(wrapper), "AMXFORGE_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 2 and "variant avx512 cannot be built here" in res.stderr and "-mavx512bf16" in res.stderr
    assert "CPU lacks" not in res.stderr  # what it cannot build, not what this host cannot run
    assert not (tmp_path / "rel").exists()


def test_an_unclean_variant_is_refused_naming_the_object(tmp_path):
    """A fork unit that emits a tile instruction through inline asm (no intrinsic for the content scan to see)."""
    project = make_project(tmp_path)
    src = project / "minifork" / "ggml" / "src"
    (src / "sneaky.c").write_text('void sneaky(void) { __asm__ volatile("tilerelease"); }\n')
    cml = src / "CMakeLists.txt"
    cml.write_text(cml.read_text().replace("set(GGML_SOURCES ggml.c", "set(GGML_SOURCES ggml.c sneaky.c"))
    res = run([tool("amxforge"), "package", "--variants", "baseline", "--fork", "minifork", "--out",
               str(tmp_path / "rel")], cwd=project)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "variant baseline is not clean, so it is not packaged" in res.stderr and "sneaky" in res.stderr
    assert not (tmp_path / "rel").exists()


def test_an_interrupted_package_run_leaves_no_release(release, tmp_path):
    project, _, _ = release
    out = tmp_path / "rel"
    proc = subprocess.Popen([tool("amxforge"), "package", *ARGS, "--out", str(out)], cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=killable_env(tmp_path))
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".rel.staging-*")):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    res = package(project, out)  # and the next run clears the leftovers
    assert res.returncode == 0, res.stderr[-2000:]
    assert not list(tmp_path.glob(".rel.staging-*")) and (out / "manifest.json").is_file()


def test_bench_fork_runs_a_release_through_its_selector(release, tmp_path):
    """--package: each runnable variant forced with AMXFORGE_VARIANT; the release has no llama-sweep-bench, whose
    absence is said, and llama-bench (which takes no --amx) measures every cell."""
    project, rel, _ = release
    res = run([tool("amxforge"), "bench", "fork", "--package", str(rel), "--threads", "1", "--reps", "1",
               "--warmup", "0", "--json", "--out", str(tmp_path / "o")], cwd=project)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    cells, summary = lines[:-1], lines[-1]
    runnable = [v for v in ["amx", "avx512", "baseline"] if variant_runs_here(v)[0]]
    assert summary["tool"] == "llama-bench" and summary["columns"] == runnable
    assert "has no llama-sweep-bench" not in (summary["tools_passed_over"] or "")
    assert [c["variant"] for c in cells] == runnable and all(c["status"] == "ok" for c in cells)
    for v in set(VARIANTS) - set(runnable):
        assert any(line.startswith(f"rel {v}: it cannot run on this host") for line in summary["skipped"])
    assert summary["preference"] == {"minifork-test": sorted(runnable, key=lambda v: -next(
        c["tg"]["median"] for c in cells if c["variant"] == v))}
