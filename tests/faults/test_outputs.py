"""Issue 18, item 4 (and the package half of 11): `amxforge package` replaces only what it made. --out may be new,
empty, or an earlier release (with --force); never the checkout, an ancestor of it, build/, a variant's build, a
directory holding .git, /, or $HOME, whatever --force says. Packaging never removes the user's own fork build of a
variant. One run per --out at a time; SIGTERM leaves no staging; a place it cannot write is refused before anything
is built."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import make_project, run, scons, tool
from faultlib import remount, tmpfs


def package(project, *args, env=None):
    return run([tool("amxforge"), "package", "--variants", "baseline", *args], cwd=project, env=env)


def tree_digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".amxforge-package.lock" not in p.name}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A project whose baseline has a fork build of its own (the user's), and a git checkout beside it."""
    project = make_project(tmp_path_factory.mktemp("outputs"))
    res = scons(project, "variant=baseline", "fork=minifork", "fork_targets=llama-bench,llama-cli")
    assert res.returncode == 0, res.stderr[-2000:]
    subprocess.run(["git", "init", "-q", str(project / "checkout")], check=True)
    (project / "checkout" / "work.txt").write_text("uncommitted work\n")
    return project


@pytest.mark.parametrize("out,what", [
    (".", "is the amxforge project"),
    ("..", "an ancestor of the amxforge project"),
    ("build", "is amxforge's build directory"),
    ("build/baseline", "a variant's build directory"),
    ("checkout", "a directory holding .git"),
    ("/", "the root directory"),
    ("~", "your home directory"),
    ("minifork", "holds files that are not an amxforge release"),
])
def test_an_out_that_is_not_ours_is_refused_even_with_force(built, out, what):
    before = tree_digest(built)
    res = package(built, "--out", os.path.expanduser(out), "--force")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and what in lines[0], res.stderr
    assert tree_digest(built) == before  # nothing built, nothing replaced
    if "choose a new directory, e.g. --out " in lines[0]:  # the advice works as typed
        advised = lines[0].split("e.g. --out ")[1]
        res = package(built, "--out", advised)
        assert res.returncode == 0, res.stderr[-2000:]
        assert json.loads((Path(advised) / "manifest.json").read_text())["selection"] == ["baseline"]
        shutil.rmtree(advised)
        os.unlink(f"{advised}.tar.gz")


def test_packaging_puts_the_users_fork_build_back(built, tmp_path):
    record = built / "build" / "baseline" / "fork" / "amxforge-build.json"
    before = json.loads(record.read_text())
    res = package(built, "--out", str(tmp_path / "kernels-only"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "putting back build/baseline's fork build" in res.stderr
    manifest = json.loads((tmp_path / "kernels-only" / "manifest.json").read_text())
    assert not any("llama" in f["path"] or "ggml" in f["path"] for f in manifest["files"])  # not in the release
    after = json.loads(record.read_text())
    assert after["fork"]["root"] == before["fork"]["root"] and after["targets"] == before["targets"]
    for f in after["installed"]:
        assert (built / f["path"]).is_file()
    assert scons(built, "-q", "variant=baseline", "fork=minifork", "fork_targets=llama-bench,llama-cli").returncode == 0


def test_two_package_runs_to_one_out_take_turns(built, tmp_path):
    out = tmp_path / "rel"
    procs = [subprocess.Popen([tool("amxforge"), "package", "--variants", "baseline", "--out", str(out), "--force"],
                              cwd=built, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0, 0], results
    waited = [i for i, r in enumerate(results) if "waiting for it to finish" in r[1]]
    assert len(waited) == 1, results  # the second names the first, which holds the lock
    assert f"another package run (pid {procs[1 - waited[0]].pid}) writes {out}; waiting" in results[waited[0]][1]
    assert json.loads((out / "manifest.json").read_text())["selection"] == ["baseline"]
    assert not list(tmp_path.glob(".rel.staging-*")) and not list(tmp_path.glob(".rel.old-*"))


def test_sigterm_leaves_no_staging_and_no_release(built, tmp_path):
    out = tmp_path / "rel"
    proc = subprocess.Popen([tool("amxforge"), "package", "--variants", "baseline", "--out", str(out)], cwd=built,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".rel.staging-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "amxforge: terminated", err
    assert not out.exists() and not list(tmp_path.glob(".rel.staging-*"))


def test_a_place_it_cannot_write_is_refused_before_building(built, tmp_path):
    disk = tmp_path / "ro"
    with tmpfs(disk, "8m"):
        remount(disk, "ro")
        res = package(built, "--out", str(disk / "rel"))
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "cannot write" in res.stderr and "building variant" not in res.stderr
        remount(disk, "rw")
        res = package(built, "--out", str(disk / "rel"))  # 8 MiB: too small for a release
        assert res.returncode == 2 and "MiB free there, the release needs about" in res.stderr, res.stderr
        assert "building variant" not in res.stderr and not (disk / "rel").exists()
