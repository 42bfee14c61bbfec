"""SCons tool: per-unit ISA flags from the amxforge policy (every unit a class, every build a variant).

env.AmxforgeConfigure(variables)   resolve variant= (auto, native from the probe) and check the compiler
env.PolicyObjects(sources[, shared])  objects in build/VARIANT/obj/ with their class's rendered flags
env.AmxforgeFinish()               build/VARIANT/policy.json and compile_commands.json, progress, summary
"""

from amxforge import sconsglue


def generate(env):
    env.AddMethod(sconsglue.configure, "AmxforgeConfigure")
    env.AddMethod(sconsglue.policy_object, "PolicyObject")
    env.AddMethod(sconsglue.policy_objects, "PolicyObjects")
    env.AddMethod(sconsglue.finish, "AmxforgeFinish")


def exists(env):
    return True
