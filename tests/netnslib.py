"""Hosts as Linux network namespaces joined to this one by a veth pair (for tests and benchmarks of builds past one
machine): real servers (redis-server, ...) run inside, reached at their own address. Needs root; addresses exist only
inside the namespaces, and everything is removed on exit."""

import os
import shutil
import socket
import subprocess
import time


def why_not_namespaces() -> str:
    """None when namespaces can be made here, else why not (for a skip)."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_NET_ADMIN"
    if not shutil.which("ip"):
        return "iproute2's ip is not installed"
    return None


def _sh(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


class NamespaceHost:
    """with NamespaceHost("afx-x", "10.231.7") as host: host.start("redis-server", ...); host.ip"""

    def __init__(self, name: str, subnet: str):
        self.name, self.ip, self.peer_ip = name, f"{subnet}.2", f"{subnet}.1"
        tag = name[-8:]
        self.veth = (f"h{tag}", f"n{tag}")
        self.procs = []

    def __enter__(self):
        res = _sh("ip", "netns", "add", self.name, check=False)
        if res.returncode != 0:
            raise OSError(f"network namespaces are refused here: {res.stderr.strip()}")
        try:
            _sh("ip", "link", "add", self.veth[0], "type", "veth", "peer", "name", self.veth[1])
            _sh("ip", "link", "set", self.veth[1], "netns", self.name)
            _sh("ip", "addr", "add", f"{self.peer_ip}/24", "dev", self.veth[0])
            _sh("ip", "link", "set", self.veth[0], "up")
            for cmd in (("ip", "addr", "add", f"{self.ip}/24", "dev", self.veth[1]),
                        ("ip", "link", "set", self.veth[1], "up"), ("ip", "link", "set", "lo", "up")):
                _sh("ip", "netns", "exec", self.name, *cmd)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self, *cmd) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def redis(self, port: int = 6379) -> str:
        self.start("redis-server", "--bind", self.ip, "--port", str(port), "--save", "", "--appendonly", "no",
                   "--protected-mode", "no")
        self.wait_port(port)
        return f"redis://{self.ip}:{port}"

    def wait_port(self, port: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                socket.create_connection((self.ip, port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"nothing listens on {self.ip}:{port}")

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
            proc.wait()
        _sh("ip", "netns", "del", self.name, check=False)
        _sh("ip", "link", "del", self.veth[0], check=False)
