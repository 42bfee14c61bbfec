"""The planner: from the probe's facts and the compiler a build will use, which variants build and run here, what
`auto` picks, and each variant's requirements. The one place that judges; the probe only reports facts, and `scons`,
`amxforge probe` and packaging all ask this with their own compiler (so they can never disagree).

Whether a compiler takes a flag is one cached function (a real compile per flag, cached per compiler binary)."""

import hashlib
import json
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

from ..errors import AmxforgeError
from ..paths import cache_dir


def _compiler_identity(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.realpath(path)}|{st.st_mtime_ns}|{st.st_size}"


def accepted_flags(compiler_path: str, flags) -> dict:
    """{flag: accepted?} for this compiler binary: each flag compiled alone into an empty C unit with -Werror (in
    parallel), the answers cached per compiler (path, mtime, size) in ~/.cache/amxforge/flags-*.json."""
    flags = sorted(set(flags))
    try:
        ident = _compiler_identity(compiler_path)
    except OSError:
        raise AmxforgeError(f"compiler {compiler_path} not found; pass CC=/path/to/compiler") from None
    path = cache_dir() / f"flags-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.json"
    known = {}
    try:
        from ..atomic import read_text
        data = json.loads(read_text(path))
        if isinstance(data, dict) and data.get("compiler") == ident and isinstance(data.get("flags"), dict):
            known = {f: bool(ok) for f, ok in data["flags"].items()}
    except (OSError, ValueError):
        pass  # no cache yet, or a damaged one: compile again and rewrite it
    todo = [f for f in flags if f not in known]
    if todo:
        with tempfile.TemporaryDirectory(prefix="amxforge-flagtest-") as tmp:
            src = os.path.join(tmp, "t.c")
            with open(src, "w") as handle:
                handle.write("int amxforge_flag_test;\n")

            def test(item):
                i, flag = item
                res = subprocess.run([compiler_path, "-Werror", flag, "-c", src, "-o", os.path.join(tmp, f"{i}.o")],
                                     capture_output=True, timeout=120)
                return flag, res.returncode == 0

            with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
                known.update(pool.map(test, enumerate(todo)))
        from ..atomic import write_text
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, json.dumps({"compiler": ident, "flags": known}, sort_keys=True))
        except OSError:
            pass  # read-only cache: the next run compiles again
    return {f: known[f] for f in flags}


def requirements(policy, variant) -> dict:
    """What a CPU and OS need to run a variant's binaries: CPU features, XSAVE states, AMX permission."""
    isa = policy.isa
    features = sorted(variant.required_features(isa))
    states = sorted({isa.cpuid[f].state for f in features if f in isa.cpuid} - {"none"})
    return {"features": features, "xsave_states": states,
            "permission": any(isa.xsave_states[s].permission for s in states)}


def plan(policy, facts: dict, compiler) -> dict:
    """{NAME: {buildable, runnable, why, requires}} for every variant, and `auto`: {picks, ...}.
    `compiler` is the Compiler the build uses (None with `compiler_error` explaining why there is none)."""
    cpu_features = set(facts["cpu"]["features"])
    osr = facts["os"]
    every_flag = []
    report = {}
    variants = {}
    for name in policy.variants.raw:
        try:
            variants[name] = policy.variant(name, facts["cpu"]["features"])
        except AmxforgeError as exc:
            report[name] = {"buildable": False, "runnable": False, "why": str(exc), "requires": None}
    rendered = {}
    for name, variant in variants.items():
        flags, error = [], None
        if not isinstance(compiler, str):
            for cls in policy.classes_for(variant, cpu_only=True):
                try:
                    flags += policy.class_flags(cls, variant, compiler)
                except AmxforgeError as exc:
                    error = str(exc)
                    break
        rendered[name] = (flags, error)
        every_flag += flags
    accepted = accepted_flags(compiler.path, every_flag) if not isinstance(compiler, str) and every_flag else {}
    for name, variant in variants.items():
        why_build, why_run = [], []
        flags, error = rendered[name]
        if isinstance(compiler, str):
            why_build.append(compiler)
        elif error:
            why_build.append(error)
        else:
            bad = sorted({f for f in flags if not accepted.get(f, True)})
            if bad:
                why_build.append(f"{compiler.describe()} rejects {', '.join(bad)}")
        if variant.cuda and not (facts["cuda"]["nvcc"] or {}).get("archs"):
            why_build.append("no nvcc on PATH (install the CUDA toolkit or add its bin/ to PATH)")
        needs = requirements(policy, variant)
        missing = sorted(set(needs["features"]) - cpu_features)
        if missing:
            why_run.append("CPU lacks " + " ".join(missing))
        if variant.uses_amx and not osr["amx_permitted"]:
            why_run.append("OS: " + (osr["error"] or "AMX not permitted"))
        if variant.cuda and not facts["cuda"]["devices"]:
            why_run.append("no CUDA device visible")
        report[name] = {"buildable": not why_build, "runnable": not why_run,
                        "why": "; ".join(why_build + why_run) or None, "why_not_buildable": "; ".join(why_build) or None,
                        "requires": needs}
    choice = next((n for n in policy.variants.auto if report[n]["buildable"] and report[n]["runnable"]), None)
    report["auto"] = {"buildable": choice is not None, "runnable": choice is not None, "picks": choice,
                      "why": None if choice else
                      f"none of {', '.join(policy.variants.auto)} can be built and run here"}
    return report


def choose_auto(report: dict) -> str:
    auto = report["auto"]
    if not auto["picks"]:
        raise AmxforgeError(f"variant=auto: {auto['why']}; choose one with variant=NAME "
                            f"(see `amxforge probe` for why each is out)")
    return auto["picks"]
