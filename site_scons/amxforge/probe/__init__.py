"""`amxforge probe`: CPU, OS, CUDA and compilers of this host, and which variants it can build and run."""

import hashlib
import os

from ..errors import AmxforgeError
from . import cache
from .cpu import first_processor, read_cpuinfo_text

CPUINFO_ENV = "AMXFORGE_CPUINFO"  # probe another machine's /proc/cpuinfo (packaging targets, tests)


def _cpu_identity(text: str) -> str:
    fields = first_processor(text)
    ident = "|".join(fields.get(k, "") for k in ("vendor_id", "cpu family", "model", "flags"))
    return hashlib.sha256(ident.encode()).hexdigest()


def default_cc() -> str:
    return os.environ.get("CC") or "gcc"


def probe(refresh: bool = False, cpuinfo: str = None) -> dict:
    # the fix names the way this cpuinfo was given: --cpuinfo (amxforge probe) or AMXFORGE_CPUINFO (everything else,
    # scons included, which has no such option)
    fix = ("pass --cpuinfo a saved copy of a machine's /proc/cpuinfo (cat /proc/cpuinfo > FILE on it)" if cpuinfo else
           f"set {CPUINFO_ENV}=FILE to a saved copy of a machine's /proc/cpuinfo (cat /proc/cpuinfo > FILE on it)")
    cpuinfo = cpuinfo or os.environ.get(CPUINFO_ENV)
    source = (f"{CPUINFO_ENV}={cpuinfo}" if cpuinfo and cpuinfo == os.environ.get(CPUINFO_ENV) else cpuinfo) or \
        "/proc/cpuinfo"
    try:
        text = read_cpuinfo_text(cpuinfo)
    except (OSError, UnicodeError) as exc:
        raise AmxforgeError(f"cannot read {source}: {getattr(exc, 'strerror', None) or exc}; {fix}") from None
    if not first_processor(text).get("flags", "").split():
        raise AmxforgeError(f"{source}: no `flags` line in its first processor block: not a Linux x86 "
                            f"/proc/cpuinfo; {fix}")
    # a foreign cpuinfo has its own cache file: judging another machine never replaces this host's cached probe
    key = cache.cache_key(_cpu_identity(text) + (cpuinfo or ""))
    if not refresh:
        hit = cache.load(key, cpuinfo)
        if hit is not None:
            return hit
    result = _probe_cold(text, cpuinfo)
    cache.store(key, result, cpuinfo)
    return result


def _probe_cold(text: str, cpuinfo) -> dict:
    """The facts: CPU, OS, CUDA, compilers (with the ISA flags each rejects). No judgement: see policy.planner."""
    from ..policy import Policy
    from ..policy.planner import accepted_flags
    from .compilers import probe_compilers
    from .cpu import probe_cpu
    from .cuda import probe_cuda
    from .osamx import probe_os

    policy = Policy()
    result = {
        "cpu": probe_cpu(text),
        "os": probe_os(),
        "cuda": probe_cuda(),
        "compilers": probe_compilers(),
        "cpuinfo_source": cpuinfo or "/proc/cpuinfo",
    }
    all_flags = [f.flag for f in policy.isa.features.values()] + [lv.march for lv in policy.isa.levels.values()]
    for comp in result["compilers"]:
        if comp["name"] in ("gcc", "clang"):  # g++ / clang++ share their C sibling's back end
            accepted = accepted_flags(comp["path"], all_flags)
            comp["rejected_flags"] = sorted(f for f, ok in accepted.items() if not ok)
    result["variants"] = plan_for(result, default_cc())
    return result


def plan_for(facts: dict, cc: str) -> dict:
    """The planner's verdicts for the compiler command `cc` (what `scons CC=...` would use)."""
    from ..policy import Policy
    from ..policy.planner import plan
    from .compilers import identify

    try:
        compiler = identify(cc)
    except AmxforgeError as exc:
        compiler = str(exc)
    return plan(Policy(), facts, compiler)


def choose_auto(result: dict) -> str:
    from ..policy.planner import choose_auto as choose
    return choose(result["variants"])
