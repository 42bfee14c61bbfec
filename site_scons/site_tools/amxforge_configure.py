"""SCons tool: resolve a build's variant and set its environment up (one concern: what this build is).

env.AmxforgeConfigure(variables)   variant= (auto, native from the probe), the compiler checked against every flag
                                   the classes render, fork= detected, cache= and dist=icecc put in front of the
                                   kernels' compiles, the progress line and the closing summary; returns the
                                   VariantContext (None under scons -h)
exists(env): the C compiler named by CC= (or gcc) is on PATH.
"""

import atexit
import os
import shutil
import sys
from pathlib import Path

from SCons.Script import COMMAND_LINE_TARGETS, GetBuildFailures, GetOption, SetOption

from amxforge.errors import AmxforgeError
from amxforge.sconsglue import NEEDS_C_COMPILER, c_compiler_exists, fail, scons_text

def configure(env, variables):
    """Resolve the variant (errors: one line, exit 2) and set the environment up for it; `variables` are the
    SConstruct's (those it did not know are refused)."""
    from amxforge.context import VariantContext

    if GetOption("help"):
        return None
    require_tools(env, ["isa_flags", "launcher", "kernel_table", "amxforge_outputs"] +
                  (["fork"] if env["fork"] else []) + (["amxforge_audit"] if "audit" in COMMAND_LINE_TARGETS else []))
    unknown = sorted(variables.UnknownVariables())
    if unknown:
        fail(f"unknown variable(s) {', '.join(unknown)}; `scons -h` lists them")
    jobs = int(env["jobs"])
    given = env["AMXFORGE_ARGS"]
    if "fork_targets" in given and not env["fork"]:
        fail("fork_targets= names targets of a fork tree: pass fork=PATH too, or leave fork_targets out")
    try:
        fork = None
        if env["fork"]:
            from amxforge.fork.detect import detect_fork
            fork = detect_fork(env["fork"], base=env.Dir("#").abspath)
            from amxforge.forkstep import fork_targets
            if not fork_targets(env, fork):
                example = fork.spec.default_targets[0]
                raise AmxforgeError(f"fork_targets is empty; name at least one, e.g. fork_targets={example}, or leave "
                                    f"it out for the kind's default")
        if env["cache"]:
            from amxforge.cache import parse_cache_url
            parse_cache_url(env["cache"])
        ctx = VariantContext(env["variant"], cc=env["CC"], cuda_arch=env["cuda_arch"] or None,
                             project_dir=Path(env.Dir("#").abspath), cxx=env["CXX"], fork=fork)
        ctx.check_compiler_accepts()
        dist_state = _dist(env, ctx)
    except AmxforgeError as exc:
        fail(str(exc))
    if dist_state and "jobs" not in given:
        jobs = (os.cpu_count() or 1) + dist_state["slots"]
    SetOption("num_jobs", max(1, jobs))
    env["AMXFORGE_DIST"] = dist_state
    _kernel_chain(env, ctx, dist_state)
    env.Append(CCFLAGS=[scons_text(flag) for flag in ctx.reproducible_flags(ctx.project_dir, ".")])
    _progress(env, ctx)
    env["AMXFORGE"] = ctx
    env["VARIANT_NAME"] = ctx.name
    env["VARIANT_DIR"] = f"#build/{ctx.name}"
    if not env["verbose"]:
        for key, label in (("CCCOMSTR", "CC"), ("SHCCCOMSTR", "CC"), ("CXXCOMSTR", "CXX"), ("SHCXXCOMSTR", "CXX"),
                           ("LINKCOMSTR", "LINK"), ("SHLINKCOMSTR", "LINK")):
            env[key] = f"  {label:5s}$TARGET"
    runnable, why = ctx.runnable_here()
    if not runnable and not GetOption("clean"):
        print(f"amxforge: note: variant {ctx.name} builds here, but its binaries will not run on this host: {why}")
    atexit.register(_summary, ctx)
    return ctx


def require_tools(env, names) -> None:
    """Each site tool this build uses must find what it runs (its exists()); one line naming what is missing."""
    import SCons.Tool
    for name in names:
        if name not in env["TOOLS"]:
            continue  # a project that does not load it (tests/fixtures/minitree has no launcher)
        tool = SCons.Tool.Tool(name)
        if not tool.exists(env):
            fail(f"the {name} tool needs {tool.exists.__globals__['NEEDS']}")  # the tool module's own NEEDS


def _dist(env, ctx):
    """dist=icecc checked once: the scheduler's state when compiling on other hosts works now; None otherwise (when it
    was asked for but cannot work: one warning line, and the build compiles here)."""
    from amxforge import dist
    if not dist.parse_dist(env["dist"]):
        if env["dist_scheduler"]:
            raise AmxforgeError("dist_scheduler= without dist=icecc: pass dist=icecc too")
        return None
    state = dist.check(dist.scheduler_option(env["dist_scheduler"]))
    if state["usable"]:
        try:  # the pinned toolchain every host compiles with: made once per compiler
            state["toolchain"] = dist.toolchain(ctx.compiler.path, ctx.cxx.path, ctx.compiler.family,
                                                dist.toolchain_home())
        except AmxforgeError as exc:
            state.update(usable=False, why=str(exc))
    if not state["usable"]:
        print(f"amxforge: warning: dist=icecc: {state['why']}; compiling on this host", file=sys.stderr)
        return None
    print(f"amxforge: dist=icecc: scheduler {state['scheduler']}, {state['slots']} remote slots on "
          f"{sum(d['remote'] for d in state['daemons'])} hosts; this host is {state['this_host']}")
    return state


COMS = ("CCCOM", "SHCCCOM", "CXXCOM", "SHCXXCOM")


def _kernel_chain(env, ctx, dist_state):
    """cache= and dist= for the kernels' own compiles: ccache (with the variant's namespace and the remote storage)
    and icecc as its prefix, in front of every compile command; its statistics go to build/VARIANT/ccache-stats.log
    for the summary. Without cache= or dist=, compiles run as before (no ccache)."""
    from amxforge.cache import ccache_settings, namespace
    env["AMXFORGE_LAUNCH"] = []
    if not env["cache"] and not dist_state:
        return
    ccache = shutil.which("ccache")
    ctx.kernel_statslog = ctx.build_dir / "ccache-stats.log" if ccache else None
    chain, _ = ccache_settings(ccache, env["cache"] or None, namespace(ctx) if env["cache"] else None,
                               ctx.project_dir, ctx.kernel_statslog, lambda line: print(line, file=sys.stderr))
    launch = [ccache] if ccache else []
    if dist_state:
        chain["ICECC_VERSION"] = dist_state["toolchain"]["path"]
        if ccache:
            chain["CCACHE_PREFIX"] = dist_state["icecc"]
        else:
            launch.append(dist_state["icecc"])
    env["ENV"].update(chain)
    env["AMXFORGE_LAUNCH"] = launch
    for com in COMS:
        env[com] = "$AMXFORGE_LAUNCH " + env[com]


def _progress(env, ctx):
    """`[k/N] CC obj` for each unit actually compiled (nothing on a no-op rebuild); full lines with verbose=1."""
    objects, done = set(), set()

    def print_cmd_line(line, target, source, env_):
        name = str(target[0]) if target else ""
        if not objects:
            objects.update(o.get_path(env.Dir("#")) for o in ctx.object_nodes)
        if name in objects:
            done.add(name)
            line = f"[{len(done):3d}/{len(objects)}] {line.strip()}"
        sys.stdout.write(line.rstrip() + "\n")
        sys.stdout.flush()

    if not env["verbose"]:
        env["PRINT_CMD_LINE_FUNC"] = print_cmd_line


def _summary(ctx):
    if GetBuildFailures() or GetOption("clean") or GetOption("question") or GetOption("no_exec"):
        return
    if "audit" in COMMAND_LINE_TARGETS:
        return  # the audit prints its own report
    from amxforge.report import build_summary

    print(build_summary(ctx))


NEEDS = NEEDS_C_COMPILER  # what exists() checks, for the message when it is missing


def generate(env):
    env.AddMethod(configure, "AmxforgeConfigure")


def exists(env):
    return c_compiler_exists(env)
