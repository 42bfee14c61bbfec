"""No shell between amxforge and a program. SCons joins a command's arguments into one string for `sh -c`, quoting
only those with whitespace and escaping nothing else: a path with a backtick or `$(...)` would run it. Every SCons
command amxforge issues goes through `spawn` instead: the argument vector, executed directly.

SCons hands SPAWN the arguments after its quoting step: an argument holding whitespace arrives wrapped in one pair of
double quotes (SCons' quote_spaces; ESCAPE, set to `quote`, does the same for literal arguments and nodes), anything
else arrives as it was. `unquote` undoes exactly that wrapping, so every argument reaches the program byte for byte."""

import subprocess
import sys


def quote(arg: str) -> str:
    """The ESCAPE function: the same wrapping SCons applies to non-literal arguments (whitespace only)."""
    return f'"{arg}"' if (" " in arg or "\t" in arg) else arg


def unquote(arg: str) -> str:
    arg = str(arg)
    if (" " in arg or "\t" in arg) and len(arg) >= 2 and arg[0] == '"' and arg[-1] == '"':
        return arg[1:-1]
    return arg


def _run(args, env, **streams) -> int:
    argv = [unquote(a) for a in args]
    try:
        return subprocess.run(argv, env=env, close_fds=True, **streams).returncode
    except OSError as exc:
        print(f"amxforge: cannot run {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127


def spawn(sh, escape, cmd, args, env) -> int:
    """SCons' SPAWN: `sh` and `escape` are ignored; args is the whole command line, program first."""
    return _run(args, env)


def piped_spawn(sh, escape, cmd, args, env, stdout, stderr) -> int:
    """SCons' PSPAWN (output captured into the given files)."""
    return _run(args, env, stdout=stdout, stderr=stderr)


def refuse_control_characters(path, what: str) -> None:
    """A path amxforge hands to compilers, CMake, ninja and its own tab-separated tables: spaces, quotes, `$`,
    backticks and `;` are fine; a newline or a tab is not (one line naming the path)."""
    from .errors import AmxforgeError
    text = str(path)
    bad = next((c for c in text if c in "\n\r\t" or ord(c) < 0x20), None)
    if bad is not None:
        raise AmxforgeError(f"{what} {text!r} holds a control character ({bad!r}); amxforge cannot hand it to "
                            f"compilers, CMake and ninja: move or rename it to a path without one")
