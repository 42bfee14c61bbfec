"""What the SConstruct and the site tools share: typed Variables with help, variant set-up, per-unit objects,
policy.json / compile_commands.json, the progress line and the closing summary. Imported only under SCons."""

import atexit
import contextlib
import json
import os
import sys
from pathlib import Path

import SCons.Errors
from SCons.Script import (Action, BoolVariable, COMMAND_LINE_TARGETS, EnumVariable, Exit, GetBuildFailures, GetOption,
                          SetOption, Value, Variables)

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


def _positive_count(key, value, env) -> None:
    if not (value.isdigit() and int(value) > 0):
        raise AmxforgeError(f"{key}={value!r} is not a positive number; pass e.g. {key}=4")


def configure(env, variables):
    """Resolve the variant (errors: one line, exit 2) and set the environment up for it; `variables` are the
    SConstruct's (those it did not know are refused)."""
    from .context import VariantContext

    if GetOption("help"):
        return None
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
            from .fork.detect import detect_fork
            fork = detect_fork(env["fork"], base=env.Dir("#").abspath)
            from .forkstep import fork_targets
            if not fork_targets(env, fork):
                example = fork.spec.default_targets[0]
                raise AmxforgeError(f"fork_targets is empty; name at least one, e.g. fork_targets={example}, or leave "
                                    f"it out for the kind's default")
        if env["cache"]:
            from .cache import parse_cache_url
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
    return ctx


def _dist(env, ctx):
    """dist=icecc checked once: the scheduler's state when compiling on other hosts works now; None otherwise (when it
    was asked for but cannot work: one warning line, and the build compiles here)."""
    from . import dist
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
    import shutil
    from .cache import ccache_settings, namespace
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


@scons_action
def _write_value(target, source, env):
    from .atomic import write_text
    write_text(str(target[0]), source[0].get_contents().decode())


def generated(env, target, text: str):
    """A file whose content is `text`, rewritten (atomically) only when that changes."""
    node = env.Command(target, Value(text), Action(_write_value, None if env["verbose"] else "  GEN  $TARGET"))
    env.Precious(node)  # SCons would delete it before rewriting; the atomic write replaces it instead
    return node


def launcher(env, objects):
    """build/VARIANT/libexec/amxforge-launch and its table for this one variant."""
    ctx = env["AMXFORGE"]
    out = f"#build/{ctx.name}"
    program = env.Program(f"{out}/libexec/amxforge-launch", objects, LIBS=[])
    required = sorted(ctx.variant.required_features(ctx.policy.isa))
    from .launchtable import launch_table
    generated(env, f"{out}/share/amxforge/launch.tsv", launch_table([(ctx.name, ".", required, "")]))
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
    from .atomic import write_bytes
    write_bytes(str(target[0]), Path(str(source[0])).read_bytes(), mode=0o755)


def kernel_headers(env):
    """build/VARIANT/gen/akf_table.h and akf_cpuid.h from the toolchain tables; returns their directory."""
    from .implementations import kernel_table
    from .templating import render

    ctx = env["AMXFORGE"]
    table, isa = kernel_table(), ctx.policy.isa

    def unit_features(unit):
        return ctx.policy.class_features(ctx.unit(Path(env.Dir("#").abspath) / unit).unit_class, ctx.variant,
                                         ctx.compiler)

    gen = f"#build/{ctx.name}/gen"
    try:
        built = table.built(unit_features)
        ctx.kernel_impls = built
        generated(env, f"{gen}/akf_table.h", render(
            "kernels", "akf_table.h.j2", variant=ctx.name,
            required=sorted(ctx.variant.required_features(isa)), **table.header_context(built)))
        generated(env, f"{gen}/akf_cpuid.h", render(
            "kernels", "akf_cpuid.h.j2", cpuid=list(isa.cpuid.values()), states=list(isa.xsave_states.values())))
    except AmxforgeError as exc:
        fail(str(exc))
    return env.Dir(gen)


def finish(env):
    """policy.json and compile_commands.json (after the fork step, if any: a failed fork build leaves the last good
    ones), the damaged-target check, the progress line, the summary; call after all SConscripts."""
    from .buildstate import claim_variant, rebuild_damaged
    from .forkstep import fork_step, merge_compile_commands

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
    atexit.register(_summary, ctx)
    return outputs


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
    from .report import build_summary

    print(build_summary(ctx))
