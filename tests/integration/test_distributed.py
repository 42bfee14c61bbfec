"""Compiles on other hosts, for real: icecream's scheduler and redis-server on one network-namespace host, iceccd on
three more, and the build on a builder host with its own iceccd; the hosts meet on a bridge (tests/netnslib.py) and
each daemon has a /run/icecc of its own. The chain is amxforge-shim -> ccache (remote storage on the redis) -> icecc.
Asserted from the ledger: units compiled on the remote hosts, a second builder at another path gets remote-cache hits,
a daemon killed mid-compile makes icecc compile that unit here, a dead scheduler is one warning line, a builder with
another compiler never gets the first one's entries."""

import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import make_project, run, scons, tool
from icecreamlib import Cluster, why_not


WHY_NOT = why_not() or (None if shutil.which("redis-server") and shutil.which("ccache") else
                                 "redis-server and ccache are needed (.ci/run installs them from Debian's packages)")


def in_builder(cluster, cwd, *cmd, env=None, background=False, timeout=600):
    full = cluster.command(cwd, *cmd)
    if background:
        return subprocess.Popen(full, env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return run(full, env=env, timeout=timeout)


def dist_status(cluster, *extra):
    return in_builder(cluster, cluster.workdir, tool("amxforge"), "dist", "status", "--scheduler", cluster.scheduler,
                      *extra, timeout=60)


@pytest.fixture(scope="module")
def cluster():
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    try:
        with Cluster(["r1", "r2", "r3"]) as c:
            yield c
    except OSError as exc:
        pytest.skip(str(exc))


def build(cluster, project, ccache_dir, *extra, env=None, background=False):
    args = [tool("scons"), "-Q", f"--site-dir={os.path.join(os.path.dirname(__file__), '..', '..', 'site_scons')}",
            "variant=baseline", "fork=minifork", "fork_targets=llama-bench,llama-cli", "dist=icecc",
            f"dist_scheduler={cluster.scheduler}", f"cache={cluster.redis}", *extra]
    return in_builder(cluster, project, *args, env={"CCACHE_DIR": str(ccache_dir), **(env or {})},
                      background=background)


def ledger(project):
    path = project / "build" / "baseline" / "fork" / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def record(project):
    return json.loads((project / "build" / "baseline" / "fork" / "amxforge-build.json").read_text())


def test_dist_status_lists_the_daemons_and_their_slots(cluster):
    status = json.loads(dist_status(cluster, "--json").stdout)["scheduler"]
    assert status["usable"] is True and status["this_host"] == "builder", status
    remote = {d["name"]: d for d in status["daemons"] if d["remote"]}
    assert set(remote) == {"r1", "r2", "r3"} and all(d["slots"] == 2 for d in remote.values())
    assert status["slots"] == 6
    text = dist_status(cluster)
    assert text.returncode == 0 and "usable: 6 remote slots; this host is builder" in text.stdout, text.stdout


def test_units_compile_on_remote_hosts_and_a_second_builder_hits_the_cache(cluster, tmp_path):
    first = make_project(tmp_path / "one" / "deeper")
    res = build(cluster, first, tmp_path / "ccache-one")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    units = ledger(first)
    assert all(u["dist"] == "icecc" and u["cache"] == "miss" for u in units), units
    remote = [u for u in units if u["where"] == "remote"]
    assert remote, [(u["source"], u["where"]) for u in units]  # the scheduler handed work to other hosts
    assert {u["host"].split()[0] for u in remote} <= {"r1", "r2", "r3"}
    dist = record(first)["dist"]
    assert dist["engine"] == "icecc" and dist["compiled_remote"] == len(remote)
    assert dist["compiled_remote"] + dist["compiled_local"] == len(units) and dist["retried_local"] == 0
    assert os.path.isfile(dist["toolchain"]["path"])  # the pinned toolchain every host compiled with
    assert "units compiled remotely" in res.stdout and "ccache     kernels:" in res.stdout
    bench = run([str(first / "build" / "baseline" / "bin" / "llama-bench"), "--help"])
    assert bench.returncode in (0, 1) and "SIGILL" not in bench.stderr

    second = make_project(tmp_path / "two")  # another path, another depth, an empty local cache
    res = build(cluster, second, tmp_path / "ccache-two")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    units = ledger(second)
    assert {u["cache"] for u in units} == {"remote"} and {u["where"] for u in units} == {"cache"}
    assert record(second)["dist"]["cache_hits"] == len(units)
    assert {u["source"]: u["sha256"] for u in units} == {u["source"]: u["sha256"] for u in ledger(first)}


def _slow_unit(project):
    """Make one unit of this copy of the fixture take seconds, so a daemon can be killed while it compiles it."""
    path = project / "minifork" / "ggml" / "src" / "iqk" / "fa" / "iqk_fa_128_128.cpp"
    body = "".join(f"x = (x * {2 * k + 1}u) ^ (x >> {k % 31 + 1});" for k in range(60))
    path.write_text(path.read_text() + "\n#include <cstdint>\n" + "".join(
        f"std::uint64_t afx_slow_{f}(std::uint64_t x) {{ {body} return x; }}\n" for f in range(1500)))
    return path.name


def test_a_daemon_killed_mid_compile_leaves_the_unit_to_this_host(cluster, tmp_path):
    project = make_project(tmp_path / "kill")
    slow = _slow_unit(project)
    # every job to r3 (icecream's own override), so the slow unit is there when r3 is killed
    proc = build(cluster, project, tmp_path / "ccache-kill", env={"ICECC_PREFERRED_HOST": "r3"}, background=True)
    logs = project / "build" / "baseline" / "fork-work"
    killed, deadline = False, time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        for log in logs.glob("*/icecc-logs/*.log"):
            text = log.read_text(errors="replace")
            if slow in text and f"Have to use host {cluster.hosts['r3'].ip}" in text and not killed:
                time.sleep(1.0)  # it is compiling there now
                cluster.hosts["r3"].power_off()
                killed = True
        time.sleep(0.2)
    out, err = proc.communicate(timeout=300)
    assert killed, "the slow unit never went to r3: " + err[-2000:]
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    unit = next(u for u in ledger(project) if u["source"].endswith(slow))
    assert unit["where"] == "local" and cluster.hosts["r3"].ip in unit["retried"], unit
    assert record(project)["dist"]["retried_local"] >= 1
    assert "retried here after a remote failure" in out


def test_a_dead_scheduler_is_one_warning_and_a_local_build(cluster, tmp_path):
    project = make_project(tmp_path / "nosched")
    res = in_builder(cluster, project, tool("scons"), "-Q",
                             f"--site-dir={os.path.join(os.path.dirname(__file__), '..', '..', 'site_scons')}",
                             "variant=baseline", "fork=minifork", "fork_targets=llama-bench", "dist=icecc",
                             f"dist_scheduler={cluster.hosts['r1'].ip}",  # a host where no scheduler runs
                             env={"CCACHE_DIR": str(tmp_path / "ccache")})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    warnings = [line for line in res.stderr.splitlines() if line.startswith("amxforge: warning: dist=icecc")]
    assert len(warnings) == 1 and "does not answer" in warnings[0] and "compiling on this host" in warnings[0]
    assert record(project)["dist"]["engine"] is None
    assert {u["where"] for u in ledger(project)} == {"local"} and all("dist" not in u for u in ledger(project))


@pytest.mark.parametrize("mode,why", [("trickle", "no complete answer within"), ("flood", "answered more than")])
def test_a_scheduler_that_trickles_or_floods_is_cut_off(cluster, tmp_path, mode, why):
    """Issue 18 item 5: a monitor port that answers one line and then a byte a second (or without end) made
    `amxforge dist status` and `scons dist=icecc` wait forever (or eat memory); now a deadline and a cap: one line,
    and the build compiles here."""
    host = cluster.hosts["r2"]
    port = 9765 if mode == "trickle" else 9865
    host.troublesome(port + 1, mode, greeting=b"200 Welcome to the monitor\r\n")
    started = time.monotonic()
    res = in_builder(cluster, cluster.workdir, tool("amxforge"), "dist", "status", "--scheduler",
                     f"{host.ip}:{port}", "--json", timeout=60)
    assert res.returncode == 1 and time.monotonic() - started < 30, res.stderr
    assert why in json.loads(res.stdout)["scheduler"]["why"]
    if mode == "flood":
        return
    project = make_project(tmp_path / "slow-sched")
    res = in_builder(cluster, project, tool("scons"), "-Q",
                     f"--site-dir={os.path.join(os.path.dirname(__file__), '..', '..', 'site_scons')}",
                     "variant=baseline", "fork=minifork", "fork_targets=llama-bench", "dist=icecc",
                     f"dist_scheduler={host.ip}:{port}", env={"CCACHE_DIR": str(tmp_path / "ccache")}, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    warnings = [line for line in res.stderr.splitlines() if line.startswith("amxforge: warning: dist=icecc")]
    assert len(warnings) == 1 and why in warnings[0] and "compiling on this host" in warnings[0]


def test_another_compiler_never_gets_the_first_ones_entries(cluster, tmp_path):
    """compiler_check=content: a builder whose gcc differs (here: one byte appended to a copy of the driver) shares
    the remote cache without hitting entries another compiler made, and its own pinned toolchain is another one."""
    first = make_project(tmp_path / "cc-one")
    assert build(cluster, first, tmp_path / "ccache-cc1").returncode == 0
    bindir = tmp_path / "other" / "usr" / "bin"  # gcc finds cc1 relative to itself: ../lib/gcc/...
    bindir.mkdir(parents=True)
    (bindir.parent / "lib").symlink_to("/usr/lib")
    for name in ("gcc", "g++"):
        real = os.path.realpath(shutil.which(name))
        shutil.copy2(real, bindir / name)
        with open(bindir / name, "ab") as f:
            f.write(b"\0amxforge-test")
    second = make_project(tmp_path / "cc-two")
    res = build(cluster, second, tmp_path / "ccache-cc2", f"CC={bindir / 'gcc'}", f"CXX={bindir / 'g++'}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "remote" not in {u["cache"] for u in ledger(second)}
    assert record(second)["dist"]["toolchain"]["key"] != record(first)["dist"]["toolchain"]["key"]


@pytest.mark.parametrize("args,expect", [
    (("dist=distcc",), "the engine amxforge drives is icecream"),
    (("dist=icecc", "dist_scheduler=bad host"), "give a host name or address"),
    (("dist=icecc", "dist_scheduler=h:port"), "the port is not a number"),
    (("dist_scheduler=h",), "without dist=icecc"),
])
def test_bad_dist_values_are_one_line(tmp_path, args, expect):
    project = make_project(tmp_path / "bad")
    res = scons(project, "variant=baseline", "fork=minifork", *args, env={"ICECC_SCHEDULER": ""})
    assert res.returncode == 2 and expect in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_compiler_icecream_cannot_pin_is_one_warning_and_a_local_build(cluster, tmp_path):
    """A wrapper script as CC (as some toolchains install): icecc-create-env needs the compiler binary itself."""
    bindir = tmp_path / "wrappers"
    bindir.mkdir()
    for name in ("gcc", "g++"):
        (bindir / name).write_text(f"#!/bin/sh\nexec {shutil.which(name)} \"$@\"\n")
        (bindir / name).chmod(0o755)
    project = make_project(tmp_path / "wrapped")
    res = build(cluster, project, tmp_path / "ccache", f"CC={bindir / 'gcc'}", f"CXX={bindir / 'g++'}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    warnings = [line for line in res.stderr.splitlines() if line.startswith("amxforge: warning: dist=icecc")]
    assert len(warnings) == 1 and "icecc-create-env failed" in warnings[0] and "pass CC=" in warnings[0], warnings
    assert record(project)["dist"]["engine"] is None and {u["where"] for u in ledger(project)} == {"local"}
