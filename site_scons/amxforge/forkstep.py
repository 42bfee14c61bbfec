"""The fork step under SCons: build a fork tree through its own CMake (fork/driver.py) as one SCons target, the
record build/VARIANT/fork/amxforge-build.json. Up to date when nothing would change (the configure stamp holds, ninja
has no work, the last good build's files are intact), so `scons -q` after a good build exits 0. A build without
fork= retires the files a previous fork build installed. Imported only under SCons."""

import hashlib
import json
import sys

from SCons.Script import Action, GetOption, Value

from .crash import scons_action
from .errors import AmxforgeError
from .fork.ledger import RECORD


def fork_targets(env, fork=None) -> list:
    """fork_targets= as given, or the tree kind's default targets (toolchain/forks.toml) when it was left out."""
    fork = fork or env["AMXFORGE"].fork
    if "fork_targets" not in env["AMXFORGE_ARGS"]:
        return list(fork.spec.default_targets)
    return [t.strip() for t in env["fork_targets"].split(",") if t.strip()]


def fork_build(env):
    """The fork build the variables ask for (the step's signature and its action build the same one)."""
    from .fork.driver import ForkBuild

    ctx = env["AMXFORGE"]
    return ForkBuild(ctx, ctx.fork, fork_targets(env), jobs=GetOption("num_jobs"), cache=env["cache"] or None,
                     dist=env["AMXFORGE_DIST"], kernels=env["fork_kernels"])


def fork_step(env):
    """The fork step's node (None without fork=): ctx.fork built into build/VARIANT/, its record the target."""
    from .fork.record import record_path

    ctx = env["AMXFORGE"]
    out = f"#build/{ctx.name}/fork"
    if ctx.fork is None and env["fork_kernels"] != "fork":
        raise AmxforgeError(f"fork_kernels={env['fork_kernels']} needs fork=: give the tree, e.g. fork=../ik_llama.cpp "
                            f"fork_kernels={env['fork_kernels']}")
    if ctx.fork is None:
        if not record_path(ctx.build_dir).exists():
            return None
        node = env.Command(f"{out}/retired.json", Value("retire"), Action(_retire, None))
        env.AlwaysBuild(node)  # a record there means files are installed now: the same build again is not retired
        return node
    build = fork_build(env)
    # what the step would produce, deterministically; it runs again only when that changes or the state is stale
    desired = json.dumps({"stamp": build.stamp(), "config": build.config_text, "targets": build.targets},
                         sort_keys=True)
    node = env.Command(f"{out}/{RECORD}", Value(hashlib.sha256(desired.encode()).hexdigest()), Action(_run, None))
    if "AMXFORGE_SHIM" not in env or ctx.launcher is None:
        raise_bad = "this project builds no amxforge-shim and amxforge-launch (kernels/SConscript does)"
        print(f"amxforge: error: fork= needs the launchers: {raise_bad}", file=sys.stderr)
        from SCons.Script import Exit
        Exit(2)
    env.Depends(node, [env["AMXFORGE_SHIM"], ctx.launcher])  # the launchers the fork's CMake and bin/ use
    if build.route:
        env.Depends(node, env["AMXFORGE_HOOK_ARCHIVE"])  # our handler, linked into the fork's binaries
    if build.backend:
        env.Depends(node, env["AMXFORGE_BACKEND_LIBRARY"])  # our backend library, which the record describes
    env.Precious(node)  # the record of the last good build stays until a new one replaces it
    if build.state_token().startswith("stale"):
        env.AlwaysBuild(node)  # CMake/ninja decide what is out of date
    return node


# Actions are module-level functions taking what they need from the environment: SCons signs an action by its code,
# and a closure over an object would sign its address, which changes every run (so nothing would be up to date).
@scons_action
def _run(target, source, env) -> int:
    record = fork_build(env).run()
    cc = record.get("ccache")
    if cc:
        where = f" ({cc['remote_hits']} from the remote cache)" if cc.get("remote") else ""
        print(f"amxforge: ccache: {cc['hits']} hits{where}, {cc['misses']} misses in this fork build")
    dist = record.get("dist") or {}
    if dist.get("engine"):
        hosts = ", ".join(f"{host} {n}" for host, n in sorted(dist["hosts"].items())) or "none"
        print(f"amxforge: icecc: {dist['compiled_remote']} units compiled remotely ({hosts}), "
              f"{dist['compiled_local']} here, {dist['retried_local']} retried here after a remote failure, "
              f"{dist['cache_hits']} cache hits")
    return 0


@scons_action
def _retire(target, source, env) -> int:
    from . import atomic
    from .fork.ledger import LEDGER
    from .fork.record import last_good, record_path, retire

    ctx = env["AMXFORGE"]
    record = last_good(ctx.build_dir) or {"installed": []}  # damaged: nothing trustworthy to remove but itself
    retire(ctx.project_dir, record.get("installed", []))
    record_path(ctx.build_dir).unlink(missing_ok=True)
    (ctx.build_dir / "fork" / LEDGER).unlink(missing_ok=True)
    gone = [f["path"] for f in record.get("installed", [])]
    print(f"amxforge: no fork= this time: removed the previous fork build's {len(gone)} installed file(s)")
    atomic.write_json(str(target[0]), {"removed": gone})
    return 0


@scons_action
def merge_compile_commands(target, source, env) -> int:
    """compile_commands.json: the kernels' entries plus the last good fork build's units (never silently without)."""
    from . import atomic
    from .fork.record import load_record, read_snapshot
    from .fork.ledger import compile_commands

    ctx = env["AMXFORGE"]
    entries = json.loads(source[0].get_contents().decode())
    if ctx.fork is not None:
        try:
            record = load_record(ctx.build_dir)
            snapshot = read_snapshot(ctx.project_dir / record["ledger"]["path"])
        except (FileNotFoundError, AmxforgeError) as exc:
            print(f"amxforge: error: compile_commands.json needs the fork's ledger: {exc}", file=sys.stderr)
            return 2
        entries += compile_commands(snapshot, str(ctx.project_dir / record["work_dir"]))
    atomic.write_text(str(target[0]), json.dumps(entries, indent=2) + "\n")
    return 0
