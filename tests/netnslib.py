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


def _add_netns(name: str) -> None:
    res = _sh("ip", "netns", "add", name, check=False)
    if res.returncode != 0:
        raise OSError(f"network namespaces are refused here: {res.stderr.strip()}")


class Switch:
    """A bridge in a namespace of its own: the hosts joined to it reach each other at their addresses, and nothing
    else (this namespace's routes are untouched). with Switch("afx-sw", "10.231.8") as sw: sw.host("afx-a", 2)"""

    def __init__(self, name: str, subnet: str):
        self.name, self.subnet = name, subnet

    def __enter__(self):
        _add_netns(self.name)
        try:
            _sh("ip", "netns", "exec", self.name, "ip", "link", "add", "br0", "type", "bridge")
            _sh("ip", "netns", "exec", self.name, "ip", "link", "set", "br0", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def host(self, name: str, index: int) -> "NamespaceHost":
        return NamespaceHost(name, self.subnet, switch=self, index=index)

    def __exit__(self, *exc):
        _sh("ip", "netns", "del", self.name, check=False)


class NamespaceHost:
    """with NamespaceHost("afx-x", "10.231.7") as host: host.start("redis-server", ...); host.ip
    Joined to this namespace by a veth pair, or with switch= to a Switch's bridge (then only to its other hosts)."""

    def __init__(self, name: str, subnet: str, switch: Switch = None, index: int = 2):
        self.name, self.ip, self.peer_ip, self.switch = name, f"{subnet}.{index}", f"{subnet}.1", switch
        tag = name[-8:]
        self.veth = (f"h{tag}", f"n{tag}")
        self.procs = []

    def __enter__(self):
        _add_netns(self.name)
        try:
            _sh("ip", "link", "add", self.veth[0], "type", "veth", "peer", "name", self.veth[1])
            _sh("ip", "link", "set", self.veth[1], "netns", self.name)
            if self.switch is None:
                _sh("ip", "addr", "add", f"{self.peer_ip}/24", "dev", self.veth[0])
                _sh("ip", "link", "set", self.veth[0], "up")
            else:
                _sh("ip", "link", "set", self.veth[0], "netns", self.switch.name)
                for cmd in (("ip", "link", "set", self.veth[0], "master", "br0"),
                            ("ip", "link", "set", self.veth[0], "up")):
                    _sh("ip", "netns", "exec", self.switch.name, *cmd)
            for cmd in (("ip", "addr", "add", f"{self.ip}/24", "dev", self.veth[1]),
                        ("ip", "link", "set", self.veth[1], "up"), ("ip", "link", "set", "lo", "up")):
                _sh("ip", "netns", "exec", self.name, *cmd)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self, *cmd, private=(), log=None) -> subprocess.Popen:
        """Run cmd in this host; `private` directories get a tmpfs of their own first (a mount namespace of the
        process's own), so that two daemons that both use e.g. /run/icecc do not meet there. Returns the process
        (its pid is the command's: everything execs)."""
        if private:
            mounts = " && ".join(f"mkdir -p {d} && mount -t tmpfs tmpfs {d}" for d in private)
            cmd = ("unshare", "-m", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$@"', "sh", *cmd)
        out = open(log, "ab") if log else subprocess.DEVNULL
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def power_off(self) -> None:
        """Every process of this host killed at once (a daemon and the compile jobs it forked), as when it dies."""
        pids = _sh("ip", "netns", "pids", self.name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass

    def command(self, proc: subprocess.Popen, cwd, *cmd) -> list:
        """cmd as run inside this host in cwd, in the network and mount namespaces of one of its processes."""
        return ["nsenter", "-t", str(proc.pid), "-m", "-n", f"--wd={cwd}", *cmd]

    def redis(self, port: int = 6379, password: str = None) -> str:
        """A real redis-server on this host (with `password`: requirepass, as a shared cache should be)."""
        self.start("redis-server", "--bind", self.ip, "--port", str(port), "--save", "", "--appendonly", "no",
                   "--protected-mode", "no", *(("--requirepass", password) if password else ()))
        self.wait_port(port)
        return f"redis://{self.ip}:{port}"

    def troublesome(self, port: int, mode: str, greeting: bytes = b"") -> None:
        """A server that answers `greeting` and then either a byte per second forever ("trickle"), an endless
        stream ("flood"), garbage and a close ("garbage"), or nothing at all ("silent")."""
        self.start("python3", "-c", TROUBLE_SERVER, self.ip, str(port), mode, greeting.hex())
        # ready when it accepts inside its own namespace (the host may not be reachable from this one)
        _sh("ip", "netns", "exec", self.name, "python3", "-c",
            "import socket, time\nfor _ in range(200):\n    try:\n        socket.create_connection(('%s', %d), 0.5)"
            ".close(); break\n    except OSError: time.sleep(0.05)" % (self.ip, port))

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
        if self.switch is None:
            _sh("ip", "link", "del", self.veth[0], check=False)


TROUBLE_SERVER = """
import socket, sys, threading, time
ip, port, mode, greeting = sys.argv[1], int(sys.argv[2]), sys.argv[3], bytes.fromhex(sys.argv[4])
def serve(c):
    try:
        c.recv(4096)
        if mode == "silent":
            time.sleep(3600)
        c.sendall(greeting)
        if mode == "garbage":
            c.sendall(b"\\x00garbage\\r\\n")
        while mode == "trickle":
            c.sendall(b"x"); time.sleep(1)
        while mode == "flood":
            c.sendall(b"y" * 65536)
    except OSError:
        pass
    finally:
        c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((ip, port)); s.listen()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""
