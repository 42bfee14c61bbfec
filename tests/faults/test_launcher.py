"""Every installed binary is reached through the launcher: on a host without its variant's features it prints the
reason and exits 2, never SIGILL (missing features are simulated with AMXFORGE_GUARD_HIDE where the host has them)."""

import json
import os
import re
import shutil
import zlib

import pytest

from conftest import HOST, run, tool, variant_runs_here


def launch(project, variant, target, env=None):
    return run([str(project / "build" / variant / "bin" / target)], env=env)


def required(project, variant) -> set:
    table = (project / "build" / variant / "share" / "amxforge" / "launch.tsv").read_text().splitlines()
    return set(table[1].split("\t")[3].split())


@pytest.mark.parametrize("variant", ["baseline", "avx512"])
@pytest.mark.parametrize("target", ["llama-bench", "llama-cli", "amxforge-selftest", "amxforge-kbench"])
def test_binaries_refuse_on_a_host_without_their_features(fork_project, variant, target):
    """Hide a feature the variant needs (or rely on the host lacking it): exit 2 with the missing features named."""
    needs = required(fork_project, variant)
    hide = "avx2" if variant == "baseline" else "avx512f"
    res = launch(fork_project, variant, target, env={"AMXFORGE_GUARD_HIDE": hide})
    assert res.returncode == 2, (res.returncode, res.stderr)  # SIGILL would be -4 here
    assert res.stderr.startswith(f"{target}: variant {variant} cannot run on this host: this CPU lacks ")
    lacking = set(re.search(r"this CPU lacks (.*?) \(variant", res.stderr).group(1).split())
    assert lacking == (needs - HOST) | {hide} and res.stdout == ""


@pytest.mark.parametrize("variant", ["baseline", "avx512"])
def test_binaries_run_where_their_variant_runs(fork_project, variant):
    ok, why = variant_runs_here(variant)
    res = launch(fork_project, variant, "llama-bench")
    if not ok:  # the host itself lacks the features: the same refusal, not a crash
        assert res.returncode == 2 and "cannot run on this host" in res.stderr, res.stderr
        return
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["fa"] == ("fancy" if variant == "avx512" else "avx2")


def test_explain_names_the_verdict_and_the_choice(fork_project):
    res = launch(fork_project, "baseline", "llama-cli", env={"AMXFORGE_EXPLAIN": "1"})
    ok, _ = variant_runs_here("baseline")
    assert ("llama-cli: variant baseline: runs here" in res.stderr) == ok
    if ok:
        assert "llama-cli: running variant baseline: " in res.stderr and res.returncode == 0


def test_forcing_an_unknown_variant_is_one_line_and_exit_2(fork_project):
    res = launch(fork_project, "baseline", "llama-bench", env={"AMXFORGE_VARIANT": "avx1024"})
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "llama-bench: AMXFORGE_VARIANT=avx1024 is not a variant of this build; choose one of: baseline"]


def sealed(body: str) -> str:
    """A table body with the end line amxforge writes (the damage is then in the lines, not the seal)."""
    return body + f"end\t{body.count(chr(10))}\t{zlib.crc32(body.encode()):08x}\n"


def cut_last_line(t):
    lines = t.read_text().splitlines(keepends=True)
    t.write_text("".join(lines[:-1]))


@pytest.mark.parametrize("damage,message", [
    (lambda t: t.write_text(""), "not an amxforge launch table"),
    (lambda t: t.write_text("amxforge-launch\t1\nvariant\tbaseline\n"), "its end line does not match"),
    (lambda t: t.write_text(sealed("amxforge-launch\t1\nvariant\tbaseline\n")), "damaged (want variant"),
    (lambda t: t.unlink(), "cannot read"),
    (lambda t: t.write_text(sealed("amxforge-launch\t1\n")), "lists no variant"),
    (cut_last_line, "its end line does not match"),
    (lambda t: t.write_text(t.read_text().replace("variant\tbaseline\t.\t", "variant\tbaseline\t.\tamx_tile ")),
     "its end line does not match"),
    (lambda t: (t.unlink(), os.mkfifo(t)), "is a FIFO, not a regular file"),
    (lambda t: (t.unlink(), t.mkdir()), "is a directory, not a regular file"),
])
def test_a_damaged_launch_table_is_named_and_exit_2(tmp_path, fork_project, damage, message):
    build = tmp_path / "copy"
    shutil.copytree(fork_project / "build" / "baseline", build, symlinks=True)
    damage(build / "share" / "amxforge" / "launch.tsv")
    res = run([str(build / "bin" / "llama-bench")])
    assert res.returncode == 2 and message in res.stderr and "rebuild" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_missing_real_binary_is_named_not_a_crash(tmp_path, fork_project):
    build = tmp_path / "copy"
    shutil.copytree(fork_project / "build" / "baseline", build, symlinks=True)
    (build / "libexec" / "llama-bench").unlink()
    res = run([str(build / "bin" / "llama-bench")])
    ok, _ = variant_runs_here("baseline")
    assert res.returncode == 2
    assert ("libexec/llama-bench: No such file or directory" in res.stderr) == ok


def test_the_launcher_itself_runs_on_plain_x86_64(fork_project):
    """Audited like any portable unit: nothing beyond the x86-64 baseline in the launcher's objects."""
    policy = json.loads((fork_project / "build" / "avx512" / "policy.json").read_text())
    units = {u["source"]: u["unit_class"] for u in policy["units"]}
    assert units["kernels/launcher/launch.c"] == "portable" and units["kernels/runtime/guard.c"] == "portable"
    res = run([tool("amxforge"), "audit", "--variant", "avx512"], cwd=fork_project)
    assert res.returncode == 0, res.stdout
