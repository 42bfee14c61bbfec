"""What amxforge reads from icecream, table-driven on lines icecream 1.4 wrote in this project's namespace tests:
the scheduler's `listcs` answer and icecc's per-unit debug log (where a unit compiled)."""

import socket
import threading

import pytest

from amxforge import dist
from amxforge.errors import AmxforgeError

LISTCS = (b"200-ICECC 1.4.0: 9s uptime, 3 hosts, 0 jobs in queue (0 total).\n"
          b"200 Use 'help' for help and 'quit' to quit.\n"
          b" r1 (10.231.9.3:10245) [x86_64] speed=0.00 jobs=0/2 load=490\n"
          b" r2 (10.231.9.4:10245) [x86_64] speed=12.50 jobs=1/4 load=1000 busy installing since 3 s\n"
          b" b (10.231.9.5:0) [x86_64] speed=0.00 jobs=0/2 load=1000\n"
          b"200 done\n")


def _serve_once(answer: bytes):
    """A one-shot server on 127.0.0.1 answering `answer` on port+1 of the returned port (like a scheduler)."""
    mon = socket.socket()
    mon.bind(("127.0.0.1", 0))
    mon.listen()

    def serve():
        conn, _ = mon.accept()
        conn.recv(100)
        conn.sendall(answer)
        conn.close()
        mon.close()
    threading.Thread(target=serve, daemon=True).start()
    return mon.getsockname()[1] - 1


def test_listcs_is_parsed_into_daemons_and_slots():
    daemons, here = dist.list_daemons("127.0.0.1", _serve_once(LISTCS))
    assert here == "127.0.0.1"
    assert [(d["name"], d["ip"], d["slots"], d["busy"], d["remote"]) for d in daemons] == [
        ("r1", "10.231.9.3", 2, 0, True), ("r2", "10.231.9.4", 4, 1, True), ("b", "10.231.9.5", 2, 0, False)]


def test_a_server_that_is_not_a_scheduler_is_refused():
    with pytest.raises(OSError, match="not an icecream scheduler"):
        dist.list_daemons("127.0.0.1", _serve_once(b"HTTP/1.1 400 Bad Request\r\n\r\n"))


LOG_REMOTE = """ICECC[29257] 2026-11-27 07:30:05: invoked as: icecc /usr/bin/gcc -O2 -c u1.c -o u1.o
ICECC[29257] 2026-11-27 07:30:05: asking for host to use
ICECC[29257] 2026-11-27 07:30:05: Have to use host 10.231.9.3:10245 - Job ID: 6 - env: x86_64 - has env: true
ICECC[29257] 2026-11-27 07:30:05: sent 29399 bytes (24%)
"""
LOG_LOCAL = """ICECC[29312] 2026-11-27 07:30:10: asking for host to use
ICECC[29312] 2026-11-27 07:30:10: building myself, but telling localhost
"""
LOG_RETRIED = """ICECC[29797] 2026-11-27 07:31:09: Have to use host 10.231.9.4:10245 - Job ID: 1 - env: x86_64
ICECC[29797] 2026-11-27 07:31:11: saw eof without complete msg! 1
ICECC[29797] 2026-11-27 07:31:11: got exception Error 14 - error reading message from remote (10.231.9.4) 
ICECC[29797] 2026-11-27 07:31:11: invoking: /usr/bin/gcc -O2 -c slow.c -o slow.o
"""


@pytest.mark.parametrize("text,expect", [
    (LOG_REMOTE, {"where": "remote", "host": "10.231.9.3"}),
    (LOG_LOCAL, {"where": "local"}),
    (LOG_RETRIED, {"where": "local", "retried": "10.231.9.4 failed: Error 14 - error reading message from remote "
                                                 "(10.231.9.4)"}),
])
def test_where_a_unit_compiled(tmp_path, text, expect):
    log = tmp_path / "u.log"
    log.write_text(text)
    assert dist.where(log) == expect


def test_no_log_means_icecc_did_not_run(tmp_path):
    assert dist.where(tmp_path / "absent.log") is None


@pytest.mark.parametrize("value,message", [
    ("", "needs the scheduler"),
    ("bad host", "give a host name or address"),
    ("h:port", "the port is not a number"),
])
def test_bad_schedulers_are_one_line(value, message):
    with pytest.raises(AmxforgeError, match=message):
        dist.parse_scheduler(value)


@pytest.mark.parametrize("value,expect", [("sched", ("sched", 8765)), ("10.0.0.2:9000", ("10.0.0.2", 9000))])
def test_schedulers(value, expect):
    assert dist.parse_scheduler(value) == expect
