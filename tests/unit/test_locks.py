"""locks.hold against other processes holding the lock (real flock, real /proc/locks): the waiter names the holder's
pid, also in the window where a holder has locked and written nothing, and takes the lock once it is let go."""

import subprocess
import sys
import threading

from amxforge.locks import hold
from amxforge.procfs import flock_holder

HOLDER = """
import fcntl, sys
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def test_the_waiter_names_the_holder_and_takes_the_lock_when_it_is_let_go(tmp_path):
    lock = tmp_path / "a {pid} 'lock'"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "held\n"
    assert lock.read_text() == ""  # the holder wrote nothing: the pid comes from /proc/locks
    with open(lock) as probe:
        assert flock_holder(probe.fileno()) == child.pid
    said, got = [], {}
    message = lambda pid: f"waiting for {pid} on {lock}"  # noqa: E731
    waiter = threading.Thread(target=lambda: got.setdefault("handle", hold(lock, message, said.append)))
    waiter.start()
    waiter.join(timeout=2)
    assert waiter.is_alive() and said == [f"waiting for {child.pid} on {lock}"]
    child.stdin.close()
    assert child.wait(timeout=30) == 0
    waiter.join(timeout=30)
    assert not waiter.is_alive() and said == [f"waiting for {child.pid} on {lock}"]
    with open(lock) as probe:
        assert flock_holder(probe.fileno()) is not None  # ours now
    got["handle"].close()
    with open(lock) as probe:
        assert flock_holder(probe.fileno()) is None


def test_a_free_lock_is_taken_without_a_word(tmp_path):
    said = []
    handle = hold(tmp_path / "free.lock", lambda pid: f"waiting for {pid}", said.append)
    assert said == [] and flock_holder(handle.fileno()) is not None
    handle.close()
