"""A compile cache shared between builders: ccache's remote storage (ccache >= 4.4: a Redis or HTTP server) behind the
shim, for fork builds. What makes sharing across hosts and checkouts correct:

- with a remote cache, a namespace per flag policy: the variant and the hash of its rendered flags (a `native` variant
  renders the host's own features, so its namespace differs per host: its expansion is part of the key); without
  one, none, so that identical units of two variants on this builder still share entries;
- compiler_check=content: a host with another compiler binary never hits entries of this one;
- base_dir plus the -ffile-prefix-map every unit already gets: two checkouts at different paths share entries;
- the shim has already replaced -march=native by explicit flags before ccache hashes the command.

The server's reachability is checked once before the build: when it is down, the build goes on with the local cache
and says so in one line (ccache itself also degrades to local on errors and timeouts during the build). Which units
hit which cache is read back from ccache's stats log."""

import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import AmxforgeError

SCHEMES = ("redis", "http")
# ccache's wait for a remote answer (ms): a slow server costs each unit at most this, then ccache compiles locally
ATTRIBUTES = {"redis": "connect-timeout=500|operation-timeout=2000", "http": "connect-timeout=500|operation-timeout=2000"}


def parse_cache_url(value: str) -> str:
    """cache=redis://HOST[:PORT] or http://HOST[:PORT]/PATH, validated: one line naming the fix otherwise."""
    if "|" in value:
        raise AmxforgeError(f"cache={value!r}: no ccache attributes here; amxforge sets the timeouts itself")
    url = urllib.parse.urlsplit(value)
    if url.scheme not in SCHEMES or not url.hostname:
        raise AmxforgeError(f"cache={value!r}: give redis://HOST:PORT or http://HOST[:PORT]/PATH (ccache remote "
                            f"storage)")
    try:
        url.port
    except ValueError:
        raise AmxforgeError(f"cache={value!r}: the port is not a number; e.g. redis://10.0.0.2:6379") from None
    return value


def reachable(value: str, timeout: float = 2.0):
    """(True, None) or (False, why): a Redis PING answered +PONG, or any HTTP answer from the server."""
    url = urllib.parse.urlsplit(value)
    if url.scheme == "redis":
        try:
            with socket.create_connection((url.hostname, url.port or 6379), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                answer = sock.recv(64)
        except OSError as exc:
            return False, exc.strerror or str(exc)
        if not answer.startswith(b"+PONG"):
            return False, f"it answered {answer[:40]!r} to PING, not +PONG: not a Redis server"
        return True, None
    try:
        urllib.request.urlopen(urllib.request.Request(value, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True, None  # a server that answers, even 404 for the bare path, is there
    except (OSError, ValueError) as exc:
        return False, str(getattr(exc, "reason", exc))
    return True, None


_checked = {}
_warned = set()


def warn_once(line: str, warn) -> None:
    """One warning line per process: the kernels' and the fork's compiles of one build say a thing once."""
    if line not in _warned:
        _warned.add(line)
        warn(line)


def usable_remote(url: str, warn):
    """The remote cache for this run: `url` when it answers now, else None after one warning line (checked once per
    process: the kernels' and the fork's compiles of one build share the answer). Returns (url or None, record)."""
    if url not in _checked:
        ok, why = reachable(url)
        _checked[url] = ok
        if not ok:
            warn(f"amxforge: warning: remote cache {url} is unreachable or unusable ({why}); "
                 f"building with the local cache only")
    return (url if _checked[url] else None), {"url": url, "reachable": _checked[url]}


def namespace(ctx) -> str:
    """The cache namespace of a variant: its name and a hash of every class's rendered flags (never a path), so two
    checkouts of one policy share entries, another policy never sees them, and `native` differs per host."""
    import hashlib
    import json
    flags = {cls: list(ctx.class_flags(cls)) for cls in ctx.policy.classes.classes
             if cls != "cuda" or ctx.variant.cuda}
    digest = hashlib.sha256(json.dumps(flags, sort_keys=True).encode()).hexdigest()[:16]
    return f"amxforge-{ctx.name}-{digest}"


def ccache_settings(ccache, url, namespace, base_dir: Path, statslog: Path, warn) -> tuple:
    """The environment ccache runs with for one build (the kernels' or a fork's) and the remote cache's record:
    ({} and None without ccache, after one warning when cache= asked for it); the remote storage only when it answers
    now (else one warning line); a fresh stats log."""
    if not ccache:
        if url:
            warn_once(f"amxforge: warning: cache={url} needs ccache (>= 4.4): apt install ccache; building without a "
                      f"cache", warn)
        return {}, None
    remote = None
    if url:
        url, remote = usable_remote(url, warn)
    statslog.unlink(missing_ok=True)
    env = {"CCACHE_COMPILERCHECK": "content", "CCACHE_BASEDIR": str(base_dir), "CCACHE_NOHASHDIR": "1",
           "CCACHE_STATSLOG": str(statslog)}
    if namespace:
        env["CCACHE_NAMESPACE"] = namespace
    if url:
        env["CCACHE_REMOTE_STORAGE"] = f"{url}|{ATTRIBUTES[urllib.parse.urlsplit(url).scheme]}"
    return env, remote


# ccache's stats-log counters, by what they say about one compilation
OUTCOMES = (("remote", ("remote_storage_hit", "remote_storage_read_hit")),
            ("local", ("direct_cache_hit", "preprocessed_cache_hit", "local_storage_hit",
                       "local_storage_read_hit")),
            ("miss", ("cache_miss",)))


def read_statslog(path: Path) -> dict:
    """source path -> "remote" | "local" | "miss" | "uncached" from ccache's stats log (a "# SOURCE" line, then one
    counter name per line). The last compilation of a source wins."""
    outcome, current, counters = {}, None, set()

    def close():
        if current is not None:
            outcome[current] = next((name for name, keys in OUTCOMES if counters & set(keys)), "uncached")

    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        if line.startswith("# "):
            close()
            current, counters = line[2:].strip(), set()
        elif line.strip():
            counters.add(line.strip())
    close()
    return outcome


def ccache_facts() -> dict:
    """The installed ccache: its path, version and whether it can talk to remote storage."""
    exe = shutil.which("ccache")
    if not exe:
        return {"path": None, "version": None, "remote_storage": False}
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    first = out.splitlines()[0] if out else ""
    return {"path": exe, "version": first.split()[-1] if first else None,
            "remote_storage": "redis-storage" in out or "http-storage" in out}


def last_builds(project: Path) -> list:
    """The cache totals and where the units compiled, for each variant's last fork build (its validated record,
    build/VARIANT/fork/)."""
    from .fork.driver import load_record
    out = []
    for build_dir in sorted(Path(project).glob("build/*/")):
        try:
            record = load_record(build_dir)
        except (FileNotFoundError, AmxforgeError):
            continue
        if isinstance(record.get("ccache"), dict) or isinstance(record.get("dist"), dict):
            out.append({"variant": record.get("variant"), **(record.get("ccache") or {}),
                        "dist": record.get("dist") or {}})
    return out
