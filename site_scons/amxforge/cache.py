"""A compile cache shared between builders: ccache's remote storage (ccache >= 4.4: a Redis or HTTP server) in front of
every compile amxforge runs (behind the shim for fork builds, in the kernels' own SCons compiles). What makes sharing across hosts and checkouts correct:

- with a remote cache, a namespace per flag policy: the variant and the hash of its rendered flags (a `native` variant
  renders the host's own features, so its namespace differs per host: its expansion is part of the key); without
  one, none, so that identical units of two variants on this builder still share entries;
- compiler_check=content: a host with another compiler binary never hits entries of this one;
- with a remote cache, base_dir plus the -ffile-prefix-map every unit already gets: two checkouts at different paths
  share entries. base_dir has the compiler see paths relative to its directory, normalised, which the prefix maps do
  not cover (`__FILE__` then names ../../tree/src/x.h): the builders sharing a remote cache all compile so, and
  without one the command is left as it is, so that a unit compiled through the local cache is the object compiled
  without ccache (a variant built before ccache was installed keeps the protected units of one built after);
- the shim has already replaced -march=native by explicit flags before ccache hashes the command.

The server's reachability is checked once before the build (a Redis PING, after AUTH with the URL's credentials as
ccache sends them; an HTTP HEAD), within a deadline and a byte cap: when it is down, needs other credentials, answers
garbage or trickles, the build goes on with the local cache and says so in one line (ccache itself also degrades to
local on errors and timeouts during the build). Credentials in a URL are masked in every message and record. Which
units hit which cache is read back from ccache's stats log."""

import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

from .errors import AmxforgeError
from .netio import Unanswered, exchange

SCHEMES = ("redis", "http")
# ccache's wait for a remote answer (ms): a slow server costs each unit at most this, then ccache compiles locally
ATTRIBUTES = {"redis": "connect-timeout=500|operation-timeout=2000", "http": "connect-timeout=500|operation-timeout=2000"}


SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def mask(value: str) -> str:
    """The URL as it may be shown or recorded: its password (or a lone user-info token, which ccache's Redis storage
    takes as the password) replaced by ***. The user info ends at the netloc's last '@', as urlsplit reads it."""
    m = SCHEME.match(value)
    if not m:
        return value
    netloc, slash, rest = value[m.end():].partition("/")
    info, at, hostport = netloc.rpartition("@")
    if not at:
        return value
    shown = f"{info.split(':', 1)[0]}:***" if ":" in info else "***"
    return f"{m.group(0)}{shown}@{hostport}{slash}{rest}"


def parse_cache_url(value: str) -> str:
    """cache=redis://[[USER:]PASSWORD@]HOST[:PORT] or http://[USER:PASSWORD@]HOST[:PORT]/PATH, validated: one line
    naming the fix otherwise."""
    shown = mask(value)
    if "|" in value:
        raise AmxforgeError(f"cache={shown!r}: no ccache attributes here; amxforge sets the timeouts itself")
    try:
        url = urllib.parse.urlsplit(value)
        host = url.hostname
    except ValueError as exc:
        raise AmxforgeError(f"cache={shown!r}: not a URL ({exc}); give redis://HOST:PORT or http://HOST[:PORT]/PATH, "
                            f"e.g. redis://10.0.0.2:6379") from None
    try:
        port = url.port
    except ValueError:
        raise AmxforgeError(f"cache={shown!r}: the port is not a number; e.g. redis://10.0.0.2:6379") from None
    if url.scheme not in SCHEMES or not host or any(c in value for c in " \t\r\n"):
        raise AmxforgeError(f"cache={shown!r}: give redis://HOST:PORT or http://HOST[:PORT]/PATH (ccache remote "
                            f"storage)")
    if port == 0:
        raise AmxforgeError(f"cache={shown!r}: port 0; e.g. redis://10.0.0.2:6379")
    return value


def _redis_command(*words: str) -> bytes:
    """One Redis command in the protocol's array form (a password may hold spaces)."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def reachable(value: str, deadline: float = 3.0):
    """(True, None) or (False, why): a Redis server that takes the URL's credentials and answers PING with +PONG, or
    an HTTP server that answers HEAD with a status line; each within `deadline` seconds in all."""
    url = urllib.parse.urlsplit(value)
    port = url.port or (6379 if url.scheme == "redis" else 80)
    if url.scheme == "redis":
        user, password = urllib.parse.unquote(url.username or ""), urllib.parse.unquote(url.password or "")
        if url.username is not None and url.password is None:
            user, password = "", user  # redis://PASSWORD@HOST: ccache's form for a password alone
        auth = [_redis_command("AUTH", *([user] if user else []), password)] if password else []
        request = b"".join(auth) + _redis_command("PING")
        try:
            answer = exchange(url.hostname, port, request, lambda d: d.count(b"\r\n") >= len(auth) + 1 or
                              (d.startswith(b"-") and b"\r\n" in d), deadline=deadline, cap=4096)
        except Unanswered as exc:
            return False, exc.strerror
        if not answer:
            return False, "it closed the connection without answering: not a Redis server"
        lines = answer.split(b"\r\n") + [b""] * 3  # a short answer (the server closed early) is judged too
        if lines[0].startswith(b"-"):
            return False, f"it refused: {lines[0][1:80].decode(errors='replace')}" + \
                ("" if password else " (give the password as redis://PASSWORD@HOST:PORT)")
        if auth and lines[0] != b"+OK":
            return False, f"it answered {lines[0][:40]!r} to AUTH, not +OK: not a Redis server"
        if lines[len(auth)] != b"+PONG":
            return False, f"it answered {lines[len(auth)][:40]!r} to PING, not +PONG: not a Redis server"
        return True, None
    request = (f"HEAD {url.path or '/'} HTTP/1.1\r\nHost: {url.hostname}\r\nConnection: close\r\n\r\n").encode()
    try:
        answer = exchange(url.hostname, port, request, lambda d: b"\r\n" in d, deadline=deadline, cap=8192)
    except Unanswered as exc:
        return False, exc.strerror
    if not answer:
        return False, "it closed the connection without answering: not an HTTP server"
    if not re.match(rb"HTTP/1\.[01] \d{3} ", answer):
        return False, f"it answered {answer[:40]!r} to HEAD, not an HTTP status line: not an HTTP server"
    return True, None  # any status, even 404 for the bare path: the server is there


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
            warn(f"amxforge: warning: remote cache {mask(url)} is unreachable or unusable ({why}); "
                 f"building with the local cache only")
    return (url if _checked[url] else None), {"url": mask(url), "reachable": _checked[url]}


def namespace(ctx) -> str:
    """The cache namespace of a variant: its name and a hash of every class's rendered flags (never a path), so two
    checkouts of one policy share entries, another policy never sees them, and `native` differs per host."""
    import hashlib
    import json
    flags = {cls: list(ctx.class_flags(cls)) for cls in ctx.policy.classes_for(ctx.variant)}
    digest = hashlib.sha256(json.dumps(flags, sort_keys=True).encode()).hexdigest()[:16]
    return f"amxforge-{ctx.name}-{digest}"


def ccache_settings(ccache, url, namespace, base_dir: Path, statslog: Path, warn) -> tuple:
    """The environment ccache runs with for one build (the kernels' or a fork's) and the remote cache's record:
    ({} and None without ccache, after one warning when cache= asked for it); the remote storage only when it answers
    now (else one warning line); a fresh stats log."""
    if not ccache:
        if url:
            warn_once(f"amxforge: warning: cache={mask(url)} needs ccache (>= 4.4): apt install ccache; building without a "
                      f"cache", warn)
        return {}, None
    remote = None
    if url:
        url, remote = usable_remote(url, warn)
    statslog.unlink(missing_ok=True)
    env = {"CCACHE_COMPILERCHECK": "content", "CCACHE_NOHASHDIR": "1", "CCACHE_STATSLOG": str(statslog)}
    if namespace:
        env["CCACHE_NAMESPACE"] = namespace
    if url:  # base_dir makes the compiler see relative paths, which the prefix maps do not cover: see the top
        env["CCACHE_REMOTE_STORAGE"] = f"{url}|{ATTRIBUTES[urllib.parse.urlsplit(url).scheme]}"
        env["CCACHE_BASEDIR"] = str(base_dir)
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

    from .atomic import read_text
    try:
        lines = read_text(path).splitlines()
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
    from .fork.record import last_good
    out = []
    for build_dir in sorted(Path(project).glob("build/*/")):
        record = last_good(build_dir) or {}
        if isinstance(record.get("ccache"), dict) or isinstance(record.get("dist"), dict):
            out.append({"variant": record.get("variant"), **(record.get("ccache") or {}),
                        "dist": record.get("dist") or {}})
    return out
