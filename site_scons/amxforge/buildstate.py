"""Per-variant build state under SCons: one signature database per variant (build/VARIANT/.sconsign.dblite), a lock
so that two builds of the same variant wait for each other instead of corrupting it (different variants build at
once), and targets whose file no longer matches what SCons built (truncated by a full disk, edited, half-written by
a kill) rebuilt instead of trusted. Imported only under SCons."""

import sys
from pathlib import Path

import SCons.Util
from SCons.Script import GetOption, SConsignFile


def claim_variant(ctx) -> None:
    """Use build/VARIANT/.sconsign for this variant, and hold build/VARIANT/.lock while SCons runs."""
    ctx.build_dir.mkdir(parents=True, exist_ok=True)
    from . import sconsigndb
    SConsignFile(str(ctx.build_dir / ".sconsign"), dbm_module=sconsigndb)
    from .locks import hold_for_life
    hold_for_life(ctx.build_dir / ".lock",
                  lambda pid: f"amxforge: another build of variant {ctx.name} is running (pid {pid}); waiting for it "
                              f"to finish",
                  lambda line: print(line, file=sys.stderr, flush=True))


def rebuild_damaged(env, root_dir) -> list:
    """Targets under root_dir whose file differs from the content SCons recorded when it built them are rebuilt
    (AlwaysBuild, so `scons -q` also reports them out of date). Returns their paths."""
    damaged = []
    for path in sorted(Path(root_dir).rglob("*")):
        if not path.is_file() or path.name.startswith(".") or "fork-work" in path.parts:
            continue
        node = env.File(str(path))
        if not node.has_builder():
            continue  # not an SCons target (the fork's installed files are checked against their own record)
        stored = getattr(node.get_stored_info().ninfo, "csig", None)
        if stored is None:
            continue
        if SCons.Util.hash_file_signature(str(path)) != stored:  # the hash SCons itself uses
            env.AlwaysBuild(node)
            damaged.append(path)
    if damaged and not GetOption("question"):
        for path in damaged:
            print(f"amxforge: {path.relative_to(env.Dir('#').abspath)} does not match what was built (damaged or "
                  f"edited): building it again", file=sys.stderr)
    return damaged
