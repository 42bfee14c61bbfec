"""What the SConstruct and the site tools share, imported only under SCons: typed Variables with help, the error
boundary (bad input one line and exit 2; a bug one line naming its log and exit 3), text for construction variables,
and generated files rewritten only when their content changes. The site tools (site_scons/site_tools/) hold the
rest, one concern each."""

import contextlib
import sys

import SCons.Errors
from SCons.Script import Action, BoolVariable, EnumVariable, Exit, Value, Variables

from .crash import scons_action
from .errors import AmxforgeError

HELP_HEAD = """amxforge: build variant binaries with per-unit ISA flags, then audit them.

  scons [variant=auto]          build kernels/ for the best variant this host can build and run
  scons variant=amx             outputs in build/amx/: bin/ lib/ compile_commands.json policy.json
  scons variant=amx audit       build, then disassemble every object and check the policy held
  amxforge probe                what this host has, and which variants it can build and run
  scons variant=amx fork=PATH   also build a fork tree through its own CMake, with amxforge's launcher enforcing the
                                policy, into build/amx/bin/ (`amxforge fork kinds` lists the kinds of tree)
  amxforge flags --variant amx kernels/dense/gemm_amx.c   which flags a unit gets, and why

Variables (name=value on the command line):
"""


NEEDS_C_COMPILER = "a C compiler on PATH (CC=, default gcc): install gcc or pass CC=/path/to/it"


def c_compiler_exists(env) -> bool:
    """exists() of the site tools that compile C: the compiler CC= names (default gcc) is on PATH."""
    import shutil
    return shutil.which(env.get("CC") or "gcc") is not None


def scons_text(text: str) -> str:
    """Text (a path) inside a construction variable, as SCons must see it to hand it on byte for byte: `$$` is one
    `$` (a path like `/tmp/$(x)` is not a substitution). Not env.Literal: SCons still reads `$(` inside literals when
    it signs a command."""
    return text.replace("$", "$$")


def fail(message: str):
    """Bad input: one line naming the fix, exit 2, nothing written."""
    print(f"amxforge: error: {message}", file=sys.stderr)
    Exit(2)


@contextlib.contextmanager
def error_boundary():
    """Around the SConstruct: bad input that escaped as AmxforgeError is one line and exit 2; anything else (a bug) is
    one line naming the log file that holds the traceback, and exit 3. Never a Python traceback on the terminal."""
    from .crash import INTERNAL_ERROR, report

    try:
        yield
    except AmxforgeError as exc:
        fail(str(exc))
    except SCons.Errors.UserError as exc:  # a variable's validator: verbose=banana, variant=nope
        fail(f"{' '.join(str(exc).split())}; `scons -h` lists the variables and the values they take")
    except Exception as exc:  # noqa: BLE001 - SCons's own UserError/StopError are not Exceptions it shows well
        print(report(exc, "scons"), file=sys.stderr)
        Exit(INTERNAL_ERROR)


def variables(arguments) -> Variables:
    from .policy import Policy

    try:
        names = Policy().variants.names
    except AmxforgeError as exc:
        fail(str(exc))
    vars_ = Variables(None, arguments)
    policy_variants = Policy().variants

    def known_variant(key, value, env):
        if value not in names:
            raise policy_variants.unknown(value)
    key, help_, default, _, convert = EnumVariable("variant", "target variant", "auto", allowed_values=names)
    vars_.Add(key, help_, default, known_variant, convert)
    vars_.Add("cuda_arch", "CUDA archs for cuda variants, e.g. 90 or \"86;89;120\" (default: the probed GPUs)", "")
    vars_.Add("fork", "a fork tree to build into build/VARIANT/ (`amxforge fork kinds` lists the kinds)", "")
    vars_.Add("fork_targets", "comma-separated programs of the fork to build and install (default: its kind's, "
                              "e.g. llama-bench)", "")
    vars_.Add("fork_kernels", "the fork's matmul kernels: fork (its own) or amxforge (ours, through the matmul "
                              "handler the linker puts in front of the fork's entry; bf16 weights, dense or sparse)",
              "fork", _fork_kernels)
    import os
    vars_.Add("jobs", "parallel compile jobs, a positive number (default: CPU count)", str(os.cpu_count() or 1),
              _positive_count)
    vars_.Add("cache", "a compile cache shared between builders, for kernel and fork builds: redis://HOST:PORT or "
                       "http://HOST[:PORT]/PATH (ccache remote storage; namespaced by the flag policy)", "")
    vars_.Add("dist", "compile on other hosts: icecc (icecream, through ccache; needs a local iceccd; CUDA units "
                      "compile here); jobs then defaults to this host's CPUs plus the scheduler's remote slots", "")
    vars_.Add("dist_scheduler", "the icecream scheduler, HOST[:PORT] (default: $ICECC_SCHEDULER)", "")
    vars_.Add("CC", "C compiler (gcc or clang)", os.environ.get("CC", "gcc"))
    vars_.Add("CXX", "C++ compiler", os.environ.get("CXX", "g++"))
    vars_.Add(bool_variable("verbose", "print full compiler command lines", False))
    return vars_


def bool_variable(key: str, help_: str, default: bool) -> tuple:
    """SCons' BoolVariable, with one line naming the values it takes for a value it does not."""
    key, help_, default, validator, convert = BoolVariable(key, help_, default)

    def checked(value):
        try:
            return convert(value)
        except ValueError:
            raise AmxforgeError(f"{key}={value!r}: give yes or no (also 1/0, true/false, on/off)") from None
    return key, help_, default, validator, checked


def _fork_kernels(key, value, env) -> None:
    from .fork.hook import check_choice
    check_choice(value)


def _positive_count(key, value, env) -> None:
    if not (value.isdigit() and int(value) > 0):
        raise AmxforgeError(f"{key}={value!r} is not a positive number; pass e.g. {key}=4")


@scons_action
def _write_value(target, source, env):
    from .atomic import write_text
    write_text(str(target[0]), source[0].get_contents().decode())


def generated(env, target, text: str):
    """A file whose content is `text`, rewritten (atomically) only when that changes."""
    node = env.Command(target, Value(text), Action(_write_value, None if env["verbose"] else "  GEN  $TARGET"))
    env.Precious(node)  # SCons would delete it before rewriting; the atomic write replaces it instead
    return node
