"""SCons tool: `scons variant=V fork=PATH` builds a llama.cpp-family tree through its own CMake with amxforge's shim,
into build/V/ behind the launcher; the step's target is the record of the last good build.

env.AmxforgeForkStep()   the fork step's node (or the retirement of an earlier fork build's files), or None
"""

from amxforge import forkstep


def generate(env):
    env.AddMethod(forkstep.fork_step, "AmxforgeForkStep")


NEEDS = "cmake and ninja (pip install -e . installs both from PyPI)"


def exists(env):
    from amxforge.errors import AmxforgeError
    from amxforge.fork.driver import tool
    try:
        return bool(tool("cmake") and tool("ninja"))
    except AmxforgeError:
        return False
