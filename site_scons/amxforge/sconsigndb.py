"""The signature database module amxforge hands to SConsignFile: SCons' own dblite (written to a temporary file, then
renamed over the old one), except that a failure to save it (a full or read-only disk) is one line on stderr instead
of a Python traceback at exit. The previous database stays as it was; the next build checks every target again."""

import sys

import SCons.dblite

_reported = []


class _SafeDblite(SCons.dblite._Dblite):
    def sync(self) -> None:
        try:
            super().sync()
        except OSError as exc:
            self._needs_sync = False  # nothing more to try: __del__ must not raise again
            if not _reported:
                _reported.append(exc)
                print(f"amxforge: cannot save {self._file_name}: {exc.strerror}; the build's targets are checked "
                      f"again next time", file=sys.stderr, flush=True)
                import SCons.Script.Main
                if SCons.Script.Main.exit_status == 0:
                    SCons.Script.Main.exit_status = 2


def open(file, flag="r", mode: int = 0o666):  # noqa: A001 - the dbm module interface SCons calls
    return _SafeDblite(file, flag, mode)
