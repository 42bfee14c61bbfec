"""An icecream cluster on one machine, for tests and benchmarks: a scheduler (and a redis-server, the shared ccache)
on one host, iceccd on several more, each host a network namespace on a bridge (netnslib.Switch) with its own
address, each daemon with a /run/icecc of its own (a private mount namespace) and, optionally, its own CPUs
(taskset). Needs root, iproute2 and util-linux (unshare, nsenter). The build runs on the builder host: in the
network and mount namespaces of the builder's own iceccd."""

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from netnslib import Switch, why_not_namespaces

SITE = Path(__file__).resolve().parents[1] / "site_scons"
PROGRAMS = ("icecc", "iceccd", "icecc-scheduler", "icecc-create-env", "nsenter", "unshare")


def why_not() -> str:
    """None when a cluster can run here, else why not (for a skip or a benchmark's refusal)."""
    why = why_not_namespaces()
    if why:
        return why
    for prog in PROGRAMS:
        if not shutil.which(prog):
            return f"{prog} is not installed (.ci/run installs icecc from Debian's packages)"
    try:
        pwd.getpwnam("icecc")
    except KeyError:
        return "no icecc user (Debian's icecc package makes it; iceccd runs compile jobs as that user)"
    return None


class Cluster:
    """with Cluster(["r1", "r2"]) as c: c.command(cwd, ...); c.scheduler; c.redis; c.hosts["r1"].ip
    hosts: remote daemon names; cpus: {name: "0-3"} pins a daemon (and for the builder, everything it runs)."""

    def __init__(self, hosts, slots=2, cpus=None, builder_slots=2, builder_remote=False, subnet="10.231.8",
                 redis=True):
        self.names, self.slots, self.cpus = list(hosts), slots, dict(cpus or {})
        self.builder_slots, self.builder_remote, self.subnet, self.want_redis = builder_slots, builder_remote, \
            subnet, redis
        self.net = f"afx{os.getpid() % 100000}"  # icecream's network name: these daemons meet only this scheduler
        self.hosts, self.daemons, self.switch, self.redis = {}, {}, None, None

    # --- set-up ------------------------------------------------------------------------------------------------
    def __enter__(self):
        # icecream drops to its own user: its logs and environment dirs go where that user can reach
        self.workdir = Path(tempfile.mkdtemp(prefix="afx-icecream-"))
        os.chmod(self.workdir, 0o755)
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _host(self, name, index):
        host = self.switch.host(f"afx-{name}-{os.getpid() % 10000}", index).__enter__()
        self.hosts[name] = host
        return host

    def _start(self):
        self.switch = Switch(f"afx-sw-{os.getpid() % 10000}", self.subnet).__enter__()
        sched = self._host("sched", 2)
        sched.start("icecc-scheduler", "-n", self.net, "-l", str(self.workdir / "scheduler.log"), "-v")
        self.scheduler = f"{sched.ip}:8765"
        if self.want_redis:
            self.redis = sched.redis()
        for i, name in enumerate(self.names, start=3):
            self._host(name, i)
            self._iceccd(name, "-m", str(self.slots))
        self._host("builder", len(self.names) + 3)
        self._iceccd("builder", "-m", str(self.builder_slots),
                     *(() if self.builder_remote else ("--no-remote",)))
        self.wait_joined()

    def _iceccd(self, name, *options):
        envs = self.workdir / f"envs-{name}"
        envs.mkdir()
        shutil.chown(envs, "icecc", "icecc")
        cmd = ["iceccd", "-s", self.scheduler, "-n", self.net, "-N", name, "-b", str(envs), "-u", "icecc", "-v",
               *options]
        if name in self.cpus:
            cmd = ["taskset", "-c", self.cpus[name], *cmd]
        self.daemons[name] = self.hosts[name].start(*cmd, private=("/run/icecc",),
                                                    log=self.workdir / f"{name}.log")

    def wait_joined(self, timeout=60.0):
        """Until the scheduler lists every daemon (they look for it every few seconds)."""
        want, names = set(self.names) | {"builder"}, set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = {d["name"] for d in self.daemons_listed()}
            if names >= want:
                return
            time.sleep(1)
        raise AssertionError(f"the daemons did not join the scheduler in {timeout:.0f} s (it lists {sorted(names)}); "
                             f"logs in {self.workdir}")

    def daemons_listed(self) -> list:
        """The scheduler's daemons as amxforge reads them (amxforge.dist.list_daemons), asked from the builder."""
        code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from amxforge.dist import list_daemons, "
                "parse_scheduler; print(json.dumps(list_daemons(*parse_scheduler(sys.argv[2]))[0]))")
        res = subprocess.run(self.command(self.workdir, sys.executable, "-c", code, str(SITE), self.scheduler),
                             capture_output=True, text=True)
        return json.loads(res.stdout) if res.returncode == 0 else []

    # --- use ---------------------------------------------------------------------------------------------------
    @property
    def builder(self):
        return self.hosts["builder"]

    def command(self, cwd, *cmd) -> list:
        """cmd as the builder runs it (its namespaces; its CPUs when pinned)."""
        if "builder" in self.cpus:
            cmd = ("taskset", "-c", self.cpus["builder"], *cmd)
        return self.builder.command(self.daemons["builder"], cwd, *cmd)

    def __exit__(self, *exc):
        for host in reversed(list(self.hosts.values())):
            host.__exit__(None, None, None)
        if self.switch is not None:
            self.switch.__exit__()
        shutil.rmtree(self.workdir, ignore_errors=True)
