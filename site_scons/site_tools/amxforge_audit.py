"""SCons tool: `scons variant=NAME audit` builds the variant, then audits its objects. Exit codes as `amxforge
audit`: 0 clean, 1 findings, 2 when it cannot audit (nothing built, objdump missing)."""

import sys
from pathlib import Path

import SCons.Script.Main

from amxforge.crash import scons_action


@scons_action
def _audit_action(target, source, env):
    from amxforge.audit import audit_variant
    from amxforge.errors import AmxforgeError
    from amxforge.report import audit_report

    try:
        result = audit_variant(env["VARIANT_NAME"], Path(env.Dir("#").abspath))
    except AmxforgeError as exc:
        print(f"amxforge: error: {exc}", file=sys.stderr)
        return 2
    print(audit_report(result))
    if not result.ok and SCons.Script.Main.exit_status == 0:
        # findings exit 1, as `amxforge audit` does. A failing action would make SCons exit 2 whatever it returns
        # (Errors.convert_to_BuildError: "always exit with 2 on build errors"), so the audit succeeds as a build
        # step and sets the status that scons's main() exits with.
        SCons.Script.Main.exit_status = 1
    return 0


def _audit_alias(env, after):
    alias = env.Alias("audit", after, env.Action(_audit_action, None))
    env.AlwaysBuild(alias)
    return alias


def generate(env):
    env.AddMethod(_audit_alias, "AmxforgeAuditAlias")


NEEDS = "objdump on PATH: install binutils (apt-get install binutils)"


def exists(env):
    import shutil
    return shutil.which("objdump") is not None
