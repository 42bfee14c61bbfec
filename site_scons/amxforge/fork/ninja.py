"""The fork's ninja is amxforge's: it runs under a lock in its build directory, dies with the process that started it
(Linux's parent-death signal: a `kill -9` of scons alone stops it, and ninja stops its compilers), a leftover one
from a build that was killed anyway is found by that lock and stopped before another starts, and the deps log that
two ninjas at once would damage is compacted before every build. Also what the build graph says: its compile
edges (CMake's compiler rules) and the inputs of the targets."""

import ctypes
import ctypes.util
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

from .. import procfs
from ..errors import AmxforgeError

LOCK = ".amxforge-ninja.lock"
PR_SET_PDEATHSIG = 1
# CMake's Ninja generator names every compile rule <LANG>_COMPILER__<target>[_unscanned]_<config>
COMPILE_RULE = re.compile(r"^(C|CXX|CUDA|ASM|ASM_NASM|HIP|OBJC|OBJCXX)_COMPILER__")
STOP_WAIT = 30.0  # seconds a leftover ninja gets to stop its compilers after SIGTERM


def _prctl():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl


class Ninja:
    def __init__(self, exe: str, build_dir: Path, log=print):
        self.exe, self.dir, self.log = exe, Path(build_dir), log

    def _query(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([self.exe, "-C", str(self.dir), *args], capture_output=True, text=True)

    # --- what the graph says -------------------------------------------------------------------------------------
    def up_to_date(self, targets) -> bool:
        res = self._query("-n", *targets)
        return res.returncode == 0 and "no work to do" in res.stdout

    def inputs(self, targets) -> set:
        """Every file the targets are built from (transitively), as normalized absolute paths."""
        res = self._query("-t", "inputs", "--no-shell-escape", *targets)
        if res.returncode != 0 and "--no-shell-escape" in (res.stderr + res.stdout):
            res = self._query("-t", "inputs", *targets)  # an older ninja: paths are printed as they are
        if res.returncode != 0:
            raise AmxforgeError(f"ninja cannot list the inputs of {', '.join(targets)}: "
                                f"{(res.stderr or res.stdout).strip()}")
        return {os.path.normpath(self.dir / line.strip()) for line in res.stdout.splitlines() if line.strip()}

    def compile_edges(self) -> dict:
        """{object (normalized absolute path): command argv} of every compilation in the build graph."""
        rules = [r.strip() for r in self._query("-t", "rules").stdout.splitlines() if COMPILE_RULE.match(r.strip())]
        if not rules:
            return {}
        res = self._query("-t", "compdb", *rules)
        try:
            entries = json.loads(res.stdout)
        except ValueError:
            raise AmxforgeError(f"ninja -t compdb in {self.dir} gave no JSON: {(res.stderr or res.stdout)[:200]}") \
                from None
        edges = {}
        for e in entries:
            try:
                argv = shlex.split(e["command"])
            except ValueError:
                argv = [e["command"]]  # not one plain command: the launcher check names it
            edges[os.path.normpath(Path(e["directory"]) / e["output"])] = argv
        return edges

    # --- running it, owned -----------------------------------------------------------------------------------------
    def build(self, targets, jobs: int, env: dict) -> int:
        """ninja -jJOBS TARGETS under this directory's lock; returns its exit status."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / LOCK, "a+") as lock:
            self._claim(lock)
            self._query("-t", "recompact")  # a deps log damaged by an earlier ninja is rewritten, not trusted
            prctl, parent = _prctl(), os.getpid()

            def die_with_parent():
                prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
                if os.getppid() != parent:  # the parent died before the signal was armed
                    os._exit(1)

            proc = subprocess.Popen([self.exe, "-C", str(self.dir), f"-j{jobs}", *targets], env=env,
                                    preexec_fn=die_with_parent, pass_fds=(lock.fileno(),))
            lock.seek(0)
            lock.truncate()
            lock.write(f"{proc.pid}\n")
            lock.flush()
            try:
                return proc.wait()
            except BaseException:
                self._stop(proc.pid, proc)
                raise

    def _claim(self, lock) -> None:
        """Take the lock; a ninja still holding it (left by a build that was killed) is stopped first."""
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        lock.seek(0)
        text = lock.read().strip()
        pid = int(text) if text.isdigit() else None
        if pid and _is_ninja(pid):
            self.log(f"amxforge: a ninja of an earlier build (pid {pid}) still runs in {self.dir}: stopping it")
            self._stop(pid)
        else:
            self.log(f"amxforge: waiting for the processes of an earlier build in {self.dir} to finish")
        deadline = time.monotonic() + 2 * STOP_WAIT
        while time.monotonic() < deadline:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.2)
        raise AmxforgeError(f"{self.dir / LOCK} is still held by the processes of an earlier build (pid "
                            f"{pid or 'unknown'}); stop them (fuser -k '{self.dir / LOCK}') and build again")

    @staticmethod
    def _stop(pid: int, proc=None) -> None:
        """SIGTERM (ninja stops its compilers and exits), then SIGKILL after STOP_WAIT seconds."""
        for sig in (signal.SIGTERM, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return
            if proc is None and not _alive(pid):
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc is not None:
            proc.wait()


def _alive(pid: int) -> bool:
    try:
        return procfs.stat(f"/proc/{pid}/stat")[1][procfs.STATE] != "Z"
    except (OSError, ValueError, KeyError):
        return False


def _is_ninja(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv0 = handle.read().split(b"\0")[0]
    except OSError:
        return False
    return os.path.basename(argv0).startswith(b"ninja")
