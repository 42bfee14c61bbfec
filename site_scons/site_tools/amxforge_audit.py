"""SCons tool: `scons variant=NAME audit` builds the variant, then audits its objects (exit != 0 on findings)."""

import sys
from pathlib import Path


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
    return 0 if result.ok else 1


def _audit_alias(env, after):
    alias = env.Alias("audit", after, env.Action(_audit_action, None))
    env.AlwaysBuild(alias)
    return alias


def generate(env):
    env.AddMethod(_audit_alias, "AmxforgeAuditAlias")


def exists(env):
    return True
