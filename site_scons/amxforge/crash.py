"""The error boundary's log: an unexpected error (a bug, not bad input) is written with its traceback to
~/.cache/amxforge/logs/, and the user sees one line naming that file; exit code 3."""

import datetime
import os
import sys
import traceback

from .paths import cache_dir

INTERNAL_ERROR = 3


def write_log(exc: BaseException, where: str) -> str:
    """The traceback of `exc` in a new log file; its path (or a note that it could not be written)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = cache_dir() / "logs"
    path = folder / f"{where}-{stamp}-{os.getpid()}.log"
    text = (f"amxforge internal error in {where}\nargv: {sys.argv}\ncwd: {os.getcwd()}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)
    except OSError as err:
        return f"(no log: cannot write {path}: {err.strerror})"


def report(exc: BaseException, where: str) -> str:
    """The one line a user sees for an internal error."""
    log = write_log(exc, where)
    return (f"amxforge: internal error: {exc.__class__.__name__}: {exc} (a bug in amxforge; the traceback is in "
            f"{log}; please report it)")


# --- under SCons --------------------------------------------------------------------------------------------------
_internal_errors = []


def _exit_with_internal_error():
    """At exit, after SCons's own status: an internal error seen in a build action makes the exit code 3 (SCons makes
    every failing action 2)."""
    if _internal_errors:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERNAL_ERROR)


def scons_action(func):
    """A build action behind the error boundary: bad input prints one line (status 2); anything else is logged and
    named in one line, and scons exits 3. Signed by the wrapped function's code, so SCons sees no change."""
    import atexit
    import functools

    from .errors import AmxforgeError

    @functools.wraps(func)
    def action(target, source, env):
        try:
            return func(target, source, env)
        except AmxforgeError as exc:
            print(f"amxforge: error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001 - the boundary: a bug becomes one line and a log
            if not _internal_errors:
                atexit.register(_exit_with_internal_error)
            _internal_errors.append(exc)
            print(report(exc, "scons"), file=sys.stderr)
            return INTERNAL_ERROR
    return action
