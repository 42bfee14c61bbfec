"""A compile cache shared between builders, for real: redis-server in its own network namespace (a second host,
reached over a veth pair), ccache's remote storage behind the shim, two checkouts of the project at different paths
with cold local caches. Faults: the server down, a server answering garbage, a server that never answers."""

import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import make_project, run, scons, tool
from netnslib import NamespaceHost, why_not_namespaces

def _why_not() -> str:
    why = why_not_namespaces()
    if why:
        return why
    for prog in ("redis-server", "ccache"):
        if not shutil.which(prog):
            return f"{prog} is not installed (.ci/run installs it from Debian's packages)"
    features = subprocess.run(["ccache", "--version"], capture_output=True, text=True).stdout
    if "redis-storage" not in features:
        return "this ccache has no redis-storage feature (ccache >= 4.4 built with hiredis)"
    return None


WHY_NOT = _why_not()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


@pytest.fixture(scope="module")
def server_host():
    """A second host: a network namespace joined to this one by a veth pair."""
    try:
        with NamespaceHost(f"afx-cache-{os.getpid() % 100000}", "10.231.7") as host:
            yield host
    except OSError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def redis(server_host):
    return server_host.redis()


def build(project, cache, ccache_dir, variant="baseline"):
    env = {"CCACHE_DIR": str(ccache_dir)}
    return scons(project, f"variant={variant}", "fork=minifork", "fork_targets=llama-bench,llama-cli",
                 f"cache={cache}", env=env)


def record(project, variant="baseline"):
    return json.loads((project / "build" / variant / "fork" / "amxforge-build.json").read_text())


def ledger(project, variant="baseline"):
    path = project / "build" / variant / "fork" / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_second_builder_at_another_path_gets_remote_hits(redis, tmp_path):
    first = make_project(tmp_path / "builder-one" / "deeper")
    res = build(first, redis, tmp_path / "cache-one")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    units = ledger(first)
    assert units and {u["cache"] for u in units} == {"miss"} and {u["where"] for u in units} == {"local"}
    assert record(first)["ccache"]["remote"] == {"url": redis, "reachable": True}
    second = make_project(tmp_path / "two")  # another path, another depth, an empty local cache
    res = build(second, redis, tmp_path / "cache-two")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    units = ledger(second)
    remote = [u for u in units if u["cache"] == "remote"]
    assert len(remote) >= 0.95 * len(units), [(u["source"], u["cache"]) for u in units]
    cc = record(second)["ccache"]
    assert cc["remote_hits"] == len(remote) and cc["misses"] == 0
    assert {u["where"] for u in remote} == {"cache"}  # compiled nowhere in this build
    assert "remote" in res.stdout + res.stderr  # the summary line says where the hits came from
    # the same objects: prefix maps make them independent of the checkout's path
    one = {u["source"]: u["sha256"] for u in ledger(first)}
    assert {u["source"]: u["sha256"] for u in units} == one


def test_each_variant_has_its_own_namespace(redis, tmp_path):
    project = make_project(tmp_path / "ns")
    assert build(project, redis, tmp_path / "c1", "baseline").returncode == 0
    res = build(project, redis, tmp_path / "c2", "avx512")  # other flags: never a hit from baseline's entries
    assert res.returncode == 0, res.stderr[-2000:]
    assert "remote" not in {u["cache"] for u in ledger(project, "avx512")}
    assert record(project, "avx512")["ccache"]["namespace"] != record(project, "baseline")["ccache"]["namespace"]


@pytest.mark.parametrize("server,why", [
    (None, "Connection refused"),
    ("garbage", "not a Redis server"),
    ("silent", "no complete answer within"),
    ("trickle", "no complete answer within"),  # one byte a second: never a whole answer (issue 18, item 5)
    ("flood", "answered more than"),  # an endless answer: cut off at the cap, not read into memory
])
def test_a_remote_cache_that_fails_leaves_the_local_cache(server_host, tmp_path, server, why):
    port = {None: 6390, "garbage": 6391, "silent": 6392, "trickle": 6393, "flood": 6394}[server]
    ip = server_host.ip
    if server:
        server_host.troublesome(port, server, greeting=b"+PO" if server == "trickle" else b"")
    project = make_project(tmp_path / "p")
    url = f"redis://{ip}:{port}"
    started = time.monotonic()
    res = build(project, url, tmp_path / "cache")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    warnings = [line for line in res.stderr.splitlines() if line.startswith("amxforge: warning: remote cache")]
    assert len(warnings) == 1 and why in warnings[0] and "building with the local cache" in warnings[0], warnings
    assert time.monotonic() - started < 60  # the check's deadline, not the server, decides
    assert record(project)["ccache"]["remote"] == {"url": url, "reachable": False}
    assert {u["cache"] for u in ledger(project)} == {"miss"}
    # the local cache still works: a rebuild from a clean tree hits it
    shutil.rmtree(project / "build" / "baseline" / "fork-work")
    res = build(project, url, tmp_path / "cache")
    assert res.returncode == 0 and {u["cache"] for u in ledger(project)} == {"local"}


@pytest.mark.parametrize("value,expect", [
    ("ftp://host/x", "give redis://HOST:PORT or http://HOST[:PORT]/PATH"),
    ("redis://host:port", "the port is not a number"),
    ("redis://h:1|operation-timeout=1", "no ccache attributes here"),
    ("http://[::1", "not a URL (Invalid IPv6 URL)"),
    ("redis://hunter2@h:port", "the port is not a number"),
])
def test_bad_cache_values_are_one_line(tmp_path, value, expect):
    project = make_project(tmp_path / "bad")
    res = scons(project, "variant=baseline", "fork=minifork", f"cache={value}")
    assert res.returncode == 2 and expect in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "hunter2" not in res.stderr


@pytest.fixture(scope="module")
def redis_with_password(server_host):
    return server_host.redis(port=6380, password="hunter2")


def test_a_redis_that_needs_a_password_gets_it_from_the_url_and_never_shows_it(redis_with_password, tmp_path):
    """redis://PASSWORD@HOST:PORT (ccache's form): amxforge's check sends AUTH as ccache does; the password appears
    in no message and no record; without it, or with a wrong one, one warning naming why and a local build."""
    host = redis_with_password.split("//")[1]
    good = f"redis://hunter2@{host}"
    project = make_project(tmp_path / "auth")
    res = build(project, good, tmp_path / "c1")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "warning" not in res.stderr and record(project)["ccache"]["remote"] == {"url": f"redis://***@{host}",
                                                                                 "reachable": True}
    second = make_project(tmp_path / "auth2")  # the entries really went to the server
    assert build(second, good, tmp_path / "c2").returncode == 0
    assert {u["cache"] for u in ledger(second)} == {"remote"}
    for url, why in ((f"redis://{host}", "NOAUTH"), (f"redis://wrong-pass@{host}", "WRONGPASS")):
        other = make_project(tmp_path / why)
        res = build(other, url, tmp_path / f"c-{why}")
        assert res.returncode == 0
        warning = next(line for line in res.stderr.splitlines() if "warning: remote cache" in line)
        assert why in warning and "wrong-pass" not in res.stdout + res.stderr
    status = run([tool("amxforge"), "dist", "status", "--cache", good, "--json"])
    assert status.returncode == 0 and "hunter2" not in status.stdout + status.stderr
    assert json.loads(status.stdout)["cache"] == {"url": f"redis://***@{host}", "reachable": True, "why": None}
    for build_dir in (project / "build").rglob("*.json"):
        assert "hunter2" not in build_dir.read_text(), build_dir


def test_an_http_cache_answering_garbage_or_trickling_is_one_warning(server_host, tmp_path):
    for port, mode, why in ((8091, "garbage", "not an HTTP server"), (8092, "trickle", "no complete answer")):
        server_host.troublesome(port, mode, greeting=b"HTT" if mode == "trickle" else b"")
        project = make_project(tmp_path / mode)
        res = build(project, f"http://{server_host.ip}:{port}/cache", tmp_path / f"c-{mode}")
        assert res.returncode == 0, res.stderr[-2000:]
        warnings = [line for line in res.stderr.splitlines() if "warning: remote cache" in line]
        assert len(warnings) == 1 and why in warnings[0], warnings


def test_dist_status_reports_the_cache(redis, server_host):
    res = run([tool("amxforge"), "dist", "status", "--cache", redis, "--json"])
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    assert status["cache"]["reachable"] is True and status["ccache"]["remote_storage"] is True
    bad = run([tool("amxforge"), "dist", "status", "--cache", f"redis://{server_host.ip}:6399"])
    assert bad.returncode == 1 and "unreachable" in bad.stdout


HTTP_STORAGE = '''
import http.server, sys
store = {}
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_HEAD(self):
        self.send_response(200 if self.path in store else 404); self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        body = store.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b""))); self.end_headers(); self.wfile.write(body or b"")
    def do_PUT(self):
        store[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201); self.send_header("Content-Length", "0"); self.end_headers()
    def do_DELETE(self):
        store.pop(self.path, None); self.send_response(204); self.end_headers()
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
'''


def test_an_http_cache_is_shared_too(server_host, tmp_path):
    """cache=http://: ccache's HTTP storage (GET/HEAD/PUT per entry) against a real HTTP server in the namespace."""
    features = subprocess.run(["ccache", "--version"], capture_output=True, text=True).stdout
    if "http-storage" not in features:
        pytest.skip("this ccache has no http-storage feature")
    server_host.start("python3", "-c", HTTP_STORAGE, server_host.ip, "8087")
    server_host.wait_port(8087)
    url = f"http://{server_host.ip}:8087/cache"
    first = make_project(tmp_path / "h1")
    res = build(first, url, tmp_path / "c1")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert {u["cache"] for u in ledger(first)} == {"miss"} and record(first)["ccache"]["remote"]["reachable"]
    second = make_project(tmp_path / "h2" / "deeper")
    res = build(second, url, tmp_path / "c2")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert {u["cache"] for u in ledger(second)} == {"remote"}
