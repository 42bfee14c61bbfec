"""SCons tool: the guard in front of every installed binary. Real binaries live in build/VARIANT/libexec/; each
build/VARIANT/bin/<target> is a copy of amxforge-launch (portable: runs on any x86-64), which reads
build/VARIANT/share/amxforge/launch.tsv and checks CPUID, XCR0 and AMX permission before it execs the real one.

env.AmxforgeLauncher(objects)        build libexec/amxforge-launch and the launch table; returns the program node
env.AmxforgeGuarded(name, program)   bin/<name>: the launcher in front of the real program (already in libexec/)
exists(env): the C compiler named by CC= (or gcc) is on PATH.
"""

from pathlib import Path

from SCons.Script import Action

from amxforge.crash import scons_action
from amxforge.sconsglue import NEEDS_C_COMPILER, c_compiler_exists, generated

def launcher(env, objects):
    """build/VARIANT/libexec/amxforge-launch and its table for this one variant."""
    ctx = env["AMXFORGE"]
    out = f"#build/{ctx.name}"
    program = env.Program(f"{out}/libexec/amxforge-launch", objects, LIBS=["dl"])  # dlopen of libcuda (glibc < 2.34)
    required = sorted(ctx.variant.required_features(ctx.policy.isa))
    from amxforge.fork.backend import launcher_env
    from amxforge.launchtable import launch_table
    backend = bool(env.get("AMXFORGE_BACKEND_LIBRARY"))  # fork_kernels=amxforge on a ggml-registry tree
    generated(env, f"{out}/share/amxforge/launch.tsv", launch_table([(ctx.name, ".", required, ctx.gpu_needs())],
                                                                    env=launcher_env(ctx.name, backend)))
    ctx.launcher = program  # shared by every environment of this build
    return program


def guarded(env, name, program):
    """bin/<name>: a copy of the launcher; the real program must be libexec/<name>."""
    ctx = env["AMXFORGE"]
    node = env.Command(f"#build/{ctx.name}/bin/{name}", ctx.launcher,
                       Action(_copy_executable, None if env["verbose"] else "  GUARD $TARGET"))
    env.Depends(node, program)
    return node


@scons_action
def _copy_executable(target, source, env):
    from amxforge.atomic import write_bytes
    write_bytes(str(target[0]), Path(str(source[0])).read_bytes(), mode=0o755)


NEEDS = NEEDS_C_COMPILER  # what exists() checks, for the message when it is missing


def generate(env):
    env.AddMethod(launcher, "AmxforgeLauncher")
    env.AddMethod(guarded, "AmxforgeGuarded")


def exists(env):
    return c_compiler_exists(env)
