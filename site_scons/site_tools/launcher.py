"""SCons tool: the guard in front of every installed binary. Real binaries live in build/VARIANT/libexec/; each
build/VARIANT/bin/<target> is a copy of amxforge-launch (portable: runs on any x86-64), which reads
build/VARIANT/share/amxforge/launch.tsv and checks CPUID, XCR0 and AMX permission before it execs the real one.

env.AmxforgeLauncher(objects)        build libexec/amxforge-launch and the launch table; returns the program node
env.AmxforgeGuarded(name, program)   bin/<name>: the launcher in front of the real program (already in libexec/)
"""

from amxforge import sconsglue


def generate(env):
    env.AddMethod(sconsglue.launcher, "AmxforgeLauncher")
    env.AddMethod(sconsglue.guarded, "AmxforgeGuarded")


def exists(env):
    return True
