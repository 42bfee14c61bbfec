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
    cpuinfo = cpuinfo or os.environ.get(CPUINFO_ENV)
    try:
        text = read_cpuinfo_text(cpuinfo)
    except OSError as exc:
        raise AmxforgeError(f"cannot read {cpuinfo or '/proc/cpuinfo'}: {exc.strerror}; "
                            f"pass --cpuinfo FILE with a saved copy") from None
    key = cache.cache_key(_cpu_identity(text) + (cpuinfo or ""))
    if not refresh:
        hit = cache.load(key)
        if hit is not None:
            return hit
    result = _probe_cold(text, cpuinfo)
    cache.store(key, result)
    return result


def _probe_cold(text: str, cpuinfo) -> dict:
    from .compilers import accepted_flags, probe_compilers
    from .cpu import probe_cpu
    from .cuda import probe_cuda
    from .osamx import probe_os
    from ..policy import Policy

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
    result["variants"] = variant_report(policy, result)
    return result


def variant_report(policy, result: dict) -> dict:
    """{NAME: {buildable, runnable, why}} for every variant (and `auto`: which one it picks)."""
    from .compilers import identify

    cpu_features = set(result["cpu"]["features"])
    osr = result["os"]
    try:
        compiler = identify(default_cc())
    except AmxforgeError as exc:
        compiler, compiler_error = None, str(exc)
    rejected = set()
    for comp in result["compilers"]:
        if compiler and comp["path"] == compiler.path:
            rejected = set(comp.get("rejected_flags", ()))
    report = {}
    for name in policy.variants.raw:
        why_build, why_run = [], []
        try:
            variant = policy.variant(name, result["cpu"]["features"])
        except AmxforgeError as exc:
            report[name] = {"buildable": False, "runnable": False, "why": str(exc)}
            continue
        if compiler is None:
            why_build.append(compiler_error)
        else:
            for cls in policy.classes.classes:
                if cls == "cuda":
                    continue
                try:
                    bad = rejected.intersection(policy.class_flags(cls, variant, compiler))
                except AmxforgeError as exc:
                    why_build.append(str(exc))
                    break
                if bad:
                    why_build.append(f"{compiler.describe()} rejects {', '.join(sorted(bad))}")
                    break
        if variant.cuda and not (result["cuda"]["nvcc"] or {}).get("archs"):
            why_build.append("no nvcc on PATH (install the CUDA toolkit or add its bin/ to PATH)")
        missing = sorted(variant.required_features(policy.isa) - cpu_features)
        if missing:
            why_run.append("CPU lacks " + " ".join(missing))
        if variant.uses_amx and not osr["amx_permitted"]:
            why_run.append("OS: " + (osr["error"] or "AMX not permitted"))
        if variant.cuda and not result["cuda"]["devices"]:
            why_run.append("no CUDA device visible")
        report[name] = {"buildable": not why_build, "runnable": not why_run,
                        "why": "; ".join(why_build + why_run) or None}
    choice = next((n for n in policy.variants.auto if report[n]["buildable"] and report[n]["runnable"]), None)
    report["auto"] = {"buildable": choice is not None, "runnable": choice is not None, "picks": choice,
                      "why": None if choice else
                      f"none of {', '.join(policy.variants.auto)} can be built and run here"}
    return report


def choose_auto(result: dict) -> str:
    auto = result["variants"]["auto"]
    if not auto["picks"]:
        raise AmxforgeError(f"variant=auto: {auto['why']}; choose one with variant=NAME "
                            f"(see `amxforge probe` for why each is out)")
    return auto["picks"]
