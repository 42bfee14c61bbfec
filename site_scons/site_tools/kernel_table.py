"""SCons tool: the kernel library's tables as generated C headers in build/VARIANT/gen/ (rewritten only when their
content changes): akf_table.h (implementations and dtypes, toolchain/kernels.toml, with which implementations this
variant's flags build) and akf_cpuid.h (the guard's CPUID bits and XSAVE states, toolchain/isa.toml).

env.AmxforgeKernelHeaders()   returns the include directory holding them
"""

from amxforge import sconsglue


def generate(env):
    env.AddMethod(sconsglue.kernel_headers, "AmxforgeKernelHeaders")


def exists(env):
    return True
