"""Distributed compiles on an existing engine, icecream (Debian's icecc): amxforge writes no scheduler of its own.

The chain for one C/C++ unit: amxforge-shim (rewrites the flags) -> ccache (hashes the final command; local and
remote storage) -> icecc as ccache's CCACHE_PREFIX -> a host the scheduler picks, which compiles with a PINNED
toolchain: a tarball icecc-create-env makes from this builder's own compiler, so every host compiles with the same
gcc (or clang) whatever it has installed. CUDA units are cached but compiled here: icecream distributes gcc and clang
only (the shim drops CCACHE_PREFIX for nvcc).

What the build needs, checked once before it starts (a failed check is one warning line, and the build compiles
locally):
  - the scheduler answers on its monitor port (its port + 1) and lists at least one daemon that accepts remote jobs;
  - a local iceccd answers (icecc asks it for a host) and the scheduler knows this host (the local daemon is connected
    to THAT scheduler, not another one).
Faults during the build are icecream's own: a remote daemon that dies mid-compile makes icecc compile that unit here.
Where each unit compiled is read back from icecc's per-unit debug log, which the shim asks for."""

import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from . import atomic
from .errors import AmxforgeError
from .netio import exchange

ENGINES = ("icecc",)
SCHEDULER_PORT = 8765  # the monitor (text) interface listens on this + 1
DAEMON_PORT = 10245
# where icecc looks for its local daemon, in its order (client/main.cpp get_local_daemon), then TCP 127.0.0.1:10245
DAEMON_SOCKETS = ("/var/run/icecc/iceccd.socket", "/var/run/iceccd.socket", "~/.iceccd.socket")
LISTCS = re.compile(r"^\s*(?P<name>\S+) \((?P<ip>[^:()]+):(?P<port>\d+)\) \[(?P<arch>[^\]]*)\] speed=(?P<speed>[\d.]+) "
                    r"jobs=(?P<busy>\d+)/(?P<slots>\d+) load=(?P<load>\d+)")


def parse_dist(value: str):
    """dist= as given: '' (compile here) or an engine name; one line naming the fix otherwise."""
    if not value:
        return None
    if value not in ENGINES:
        raise AmxforgeError(f"dist={value!r}: the engine amxforge drives is icecream: dist=icecc "
                            f"dist_scheduler=HOST (or ICECC_SCHEDULER=HOST)")
    return value


def parse_scheduler(value: str) -> tuple:
    """HOST[:PORT] -> (host, port); one line naming the fix when absent or malformed."""
    if not value:
        raise AmxforgeError("dist=icecc needs the scheduler: pass dist_scheduler=HOST[:PORT] or set ICECC_SCHEDULER")
    host, _, port = value.strip().rpartition(":") if value.count(":") == 1 else (value.strip(), "", "")
    host = host or value.strip()
    if not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        raise AmxforgeError(f"dist_scheduler={value!r}: give a host name or address, e.g. dist_scheduler=10.0.0.2")
    if port and not port.isdigit():
        raise AmxforgeError(f"dist_scheduler={value!r}: the port is not a number; e.g. dist_scheduler=10.0.0.2:8765")
    return host, int(port) if port else SCHEDULER_PORT


def scheduler_option(option: str, environ=os.environ) -> str:
    """The scheduler as the user named it: dist_scheduler= first, then ICECC_SCHEDULER (icecream's own variable)."""
    return option or environ.get("ICECC_SCHEDULER", "")


def list_daemons(host: str, port: int, deadline: float = 5.0) -> tuple:
    """Ask the scheduler's monitor interface for its daemons: ([{name, ip, port, arch, busy, slots, load, remote}],
    the address this host reaches it from). Raises OSError when it does not answer as a scheduler within `deadline`
    seconds in all (a monitor that trickles or floods is cut off: at most 4 MiB)."""
    here = _source_address(host, port + 1)
    data = exchange(host, port + 1, b"listcs\nquit\n", lambda d: b"200 done" in d, deadline=deadline, cap=4 << 20)
    text = data.decode(errors="replace")
    if not text.startswith("200") or "200 done" not in text:
        raise OSError(f"{host}:{port + 1} answered {text[:60]!r}: not an icecream scheduler's monitor port")
    daemons = []
    for line in text.splitlines():
        m = LISTCS.match(line)
        if m:
            d = m.groupdict()
            daemons.append({"name": d["name"], "ip": d["ip"], "port": int(d["port"]), "arch": d["arch"],
                            "busy": int(d["busy"]), "slots": int(d["slots"]), "load": int(d["load"]),
                            "remote": int(d["port"]) != 0})  # a daemon started --no-remote has port 0
    return daemons, here


def _source_address(host: str, port: int) -> str:
    """The address this host uses to reach host:port (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((host, port))
            return sock.getsockname()[0]
    except OSError:
        return None


def local_daemon(timeout: float = 1.0):
    """Where icecc would reach the local iceccd (a socket path or 127.0.0.1:10245), or None."""
    for path in DAEMON_SOCKETS:
        path = os.path.expanduser(path)
        if not os.path.exists(path):
            continue
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(timeout)
                sock.connect(path)
                return path
        except OSError:
            continue  # a stale socket left by a daemon that is gone
    try:
        socket.create_connection(("127.0.0.1", DAEMON_PORT), timeout=timeout).close()
        return f"127.0.0.1:{DAEMON_PORT}"
    except OSError:
        return None


def check(scheduler: str) -> dict:
    """Can this build compile on the scheduler's hosts now? {"scheduler", "usable", "why", "daemons", "slots",
    "this_host", "local_daemon", "icecc"}; why names the fix when not usable."""
    host, port = parse_scheduler(scheduler)
    out = {"scheduler": f"{host}:{port}", "usable": False, "why": None, "daemons": [], "slots": 0, "this_host": None,
           "local_daemon": None, "icecc": shutil.which("icecc")}
    if not out["icecc"]:
        out["why"] = "icecc is not installed (apt install icecc)"
        return out
    try:
        out["daemons"], here = list_daemons(host, port)
    except OSError as exc:
        out["why"] = (f"the scheduler {host}:{port} does not answer ({exc.strerror})" if exc.strerror else
                      f"the scheduler {host}:{port} cannot be asked for its daemons: {exc}")
        return out
    out["slots"] = sum(d["slots"] for d in out["daemons"] if d["remote"])
    out["this_host"] = next((d["name"] for d in out["daemons"] if d["ip"] == here), None)
    out["local_daemon"] = local_daemon()
    if not out["slots"]:
        out["why"] = f"the scheduler {host}:{port} lists no daemon that accepts remote jobs"
    elif not out["local_daemon"]:
        out["why"] = f"no local iceccd answers (start one: iceccd -d -s {host})"
    elif not out["this_host"]:
        out["why"] = (f"the scheduler {host}:{port} does not know this host ({here}): the local iceccd is connected to "
                      f"another scheduler or none (restart it with -s {host})")
    else:
        out["usable"] = True
    return out


# --- the pinned toolchain ------------------------------------------------------------------------------------------
def _compiler_files(cc: str, cxx: str, family: str) -> list:
    """The files that make up the compiler (drivers and the compilers proper), for the toolchain's key."""
    files = [os.path.realpath(shutil.which(c) or c) for c in (cc, cxx)]
    if family == "gcc":
        for prog in ("cc1", "cc1plus", "as"):
            res = subprocess.run([cc, f"-print-prog-name={prog}"], capture_output=True, text=True)
            path = shutil.which(res.stdout.strip()) if res.returncode == 0 else None
            if path:
                files.append(os.path.realpath(path))
    return files


def toolchain_home() -> Path:
    """Where pinned toolchains live: the user's amxforge cache (one per compiler, shared by every project)."""
    from .paths import cache_dir
    return cache_dir() / "icecc"


def toolchains() -> list:
    """The pinned toolchains made on this host: [{"path", "key", "bytes", "compilers"}] (damaged manifests skipped)."""
    out = []
    for manifest in sorted(toolchain_home().glob("toolchain-*.json")):
        try:
            meta = atomic.read_json(manifest, "icecream toolchain manifest")
        except (OSError, AmxforgeError):
            continue
        tarball = manifest.with_suffix(".tar.gz")
        if tarball.is_file():
            out.append({"path": str(tarball), "key": meta.get("key"), "bytes": tarball.stat().st_size,
                        "compilers": meta.get("compilers", [])})
    return out


def toolchain_key(files: list) -> str:
    """Changes when any compiler file changes (path, size, mtime): a new compiler gets a new tarball."""
    parts = []
    for path in files:
        st = os.stat(path)
        parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def toolchain(cc: str, cxx: str, family: str, out_dir: Path, log=print) -> dict:
    """The pinned toolchain tarball for this compiler (made once by icecc-create-env, reused while the compiler is
    the same): {"path", "key", "sha256", "made"}. A tarball whose size or mtime differs from its manifest's is made
    again."""
    out_dir, files = Path(out_dir), _compiler_files(cc, cxx, family)
    key = toolchain_key(files)
    tarball, manifest = out_dir / f"toolchain-{key}.tar.gz", out_dir / f"toolchain-{key}.json"
    try:
        meta = atomic.read_json(manifest, "icecream toolchain manifest")
        st = tarball.stat()
        if [st.st_size, st.st_mtime_ns] == meta.get("stat"):  # as made (hashing 30 MB on every build costs 0.1 s)
            return {"path": str(tarball), "key": key, "sha256": meta["sha256"], "made": False}
    except (FileNotFoundError, AmxforgeError):
        pass
    create = shutil.which("icecc-create-env") or "/usr/lib/icecc/icecc-create-env"
    if not os.path.exists(create):
        raise AmxforgeError("icecc-create-env not found: apt install icecc")
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"amxforge: making the icecream toolchain for {cc} ({family}) with icecc-create-env ...")
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".making-") as tmp:
        args = [create, f"--{family}", shutil.which(cc) or cc, shutil.which(cxx) or cxx]
        res = subprocess.run(args, cwd=tmp, capture_output=True, text=True)
        made = sorted(Path(tmp).glob("*.tar.gz"))
        if res.returncode != 0 or len(made) != 1:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no tarball"]
            raise AmxforgeError(f"icecc-create-env failed for {cc}: {tail[0].rstrip('.')} (icecream pins the compiler "
                                f"binary itself: pass CC= and CXX= the real gcc/g++ or clang/clang++)")
        os.replace(made[0], tarball)
    digest, st = atomic.file_sha256(tarball), tarball.stat()
    atomic.write_json(manifest, {"key": key, "sha256": digest, "stat": [st.st_size, st.st_mtime_ns],
                                 "compilers": files})
    return {"path": str(tarball), "key": key, "sha256": digest, "made": True}


# --- where each unit compiled ---------------------------------------------------------------------------------------
def where(log_path) -> dict:
    """Where icecc compiled one unit, from its debug log: {"where": "remote", "host": ip} or {"where": "local"}, with
    "retried" when a remote host failed and the unit was compiled here; None when icecc did not run (a cache hit)."""
    try:
        text = atomic.read_text(log_path)
    except OSError:
        return None
    host = None
    for m in re.finditer(r"Have to use host ([^\s:]+):(\d+)", text):
        host = m.group(1)
    failed = re.search(r"(?:got exception|local build forced by remote exception:) (.*)", text)
    if failed:
        return {"where": "local", "retried": f"{host or 'the remote host'} failed: {failed.group(1).strip()}"}
    if host and host != "127.0.0.1":
        return {"where": "remote", "host": host}
    return {"where": "local"}
