"""SCons tool: a build's records, after every SConscript: build/VARIANT/policy.json (the rendered flag sets and every
unit) and compile_commands.json (every unit's final command, the fork's merged in from its last good build), written
only when their content changes; the fork step or the retirement of an earlier fork build; targets damaged since
they were built, rebuilt.

env.AmxforgeFinish()   returns the outputs the audit runs after
exists(env): always (it runs no program of its own).
"""

import json

from SCons.Script import Action, Value

from amxforge.sconsglue import generated

def finish(env):
    """policy.json and compile_commands.json (after the fork step, if any: a failed fork build leaves the last good
    ones), the damaged-target check, the progress line, the summary; call after all SConscripts."""
    from amxforge.buildstate import claim_variant, rebuild_damaged
    from amxforge.forkstep import fork_step, merge_compile_commands

    ctx = env["AMXFORGE"]
    out = f"#build/{ctx.name}"
    # only now, with every unit classified (bad input has stopped the build by here, nothing written):
    # build/VARIANT/.sconsign and the variant's lock (a second build of the same variant waits for this one)
    claim_variant(ctx)
    fork = fork_step(env)
    policy = generated(env, f"{out}/policy.json", ctx.policy_json())
    # Written from the objects' own build environments, and only when its content changes (SCons'
    # compilation_db tool is AlwaysBuild, which would make every no-op rebuild rewrite it).
    top = env.Dir("#").abspath
    entries = sorted(({"directory": top, "file": src.abspath, "output": obj.abspath,
                       "arguments": [str(a) for a in obj.get_build_env().subst_list(com, target=[obj],
                                                                                     source=[src])[0]]
                       [len(env["AMXFORGE_LAUNCH"]):]}  # the compiler's command, without ccache or icecc
                      for obj, src, com in ctx.compile_commands), key=lambda e: e["file"])
    kernels_db = json.dumps(entries, indent=2) + "\n"
    if ctx.fork is None:
        compdb = generated(env, f"{out}/compile_commands.json", kernels_db)
    else:
        # the fork's units are known only once its build ran: merged in from the last good build's ledger
        compdb = env.Command(f"{out}/compile_commands.json", [Value(kernels_db), fork],
                             Action(merge_compile_commands, None if env["verbose"] else "  GEN  $TARGET"))
        env.Precious(compdb)
    if fork is not None:
        env.Depends(policy, fork)
    rebuild_damaged(env, ctx.build_dir)
    outputs = [env.Dir(out), policy, compdb] + ([fork] if fork is not None else [])
    env.Default(env.Dir(out))  # everything under build/VARIANT/
    return outputs


NEEDS = "nothing"  # what exists() checks, named when it fails


def generate(env):
    env.AddMethod(finish, "AmxforgeFinish")


def exists(env):
    return True
