"""SCons tool: per-unit ISA flags from the amxforge policy (every unit a class, every build a variant).

env.PolicyObject(source[, shared])    one unit compiled with its class's rendered flags into build/VARIANT/obj/
env.PolicyObjects(sources[, shared])  the same for many
exists(env): the C compiler named by CC= (or gcc) is on PATH.
"""

import os

from amxforge.errors import AmxforgeError
from amxforge.sconsglue import NEEDS_C_COMPILER, c_compiler_exists, fail

def policy_object(env, source, shared=False):
    """One unit compiled with its class's flags into build/VARIANT/obj/<path>; returns the object node."""
    ctx = env["AMXFORGE"]
    node = env.File(source)
    src = node.srcnode()
    try:
        unit = ctx.unit(src.abspath)
    except AmxforgeError as exc:
        fail(str(exc))
    rel = os.path.splitext(src.get_path(env.Dir("#")))[0]
    suffix = env.subst("$SHOBJSUFFIX" if shared else "$OBJSUFFIX")
    builder = env.SharedObject if shared else env.Object
    obj = builder(target=f"#build/{ctx.name}/obj/{rel}{suffix}", source=src,
                  CCFLAGS=env["CCFLAGS"] + list(unit.flags))[0]
    ctx.record(unit, obj.get_path(env.Dir("#")))
    ctx.object_nodes.append(obj)
    com = ("$SHCXXCOM" if shared else "$CXXCOM") if src.suffix in (".cpp", ".cc", ".cxx") else \
          ("$SHCCCOM" if shared else "$CCCOM")
    ctx.compile_commands.append((obj, src, com))  # substituted in finish(), from the top directory
    return obj


def policy_objects(env, sources, shared=False):
    return [policy_object(env, s, shared) for s in env.Flatten(sources)]


NEEDS = NEEDS_C_COMPILER  # what exists() checks, for the message when it is missing


def generate(env):
    env.AddMethod(policy_object, "PolicyObject")
    env.AddMethod(policy_objects, "PolicyObjects")


def exists(env):
    return c_compiler_exists(env)
