"""The compiler launcher for fork builds (CMAKE_<LANG>_COMPILER_LAUNCHER): boring, total and logged.

    python -m amxforge.fork.shim CONFIG.json <compiler> <args...>

Per unit: classify the source (the policy's rules, precomputed into CONFIG by the driver), remove the ISA flags
the policy owns (-march=*, -mtune=*, every -m<feature>/-mno-<feature>; for nvcc also its arch options and the ISA
flags inside -Xcompiler), add the class's rendered flags, run the real compiler (through ccache when configured),
and append one JSON line to the ledger. The compiler's exit code and output pass through unchanged.
Kept to the standard library and a JSON read: it runs once per compilation unit.
"""

import fcntl
import json
import os
import re
import subprocess
import sys
import time

SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".cu", ".s", ".S")


def classify(rel: str, rules):
    for rule_id, cls, patterns in rules:
        for glob, regex in patterns:
            if re.match(regex, rel):
                return cls, rule_id, glob
    return "default", "none", ""


def owned(flag: str, cfg) -> bool:
    return flag in cfg["owned_flags"] or flag.startswith(tuple(cfg["owned_prefixes"]))


def strip_host_flags(value: str, cfg):
    """-Xcompiler values are comma- or space-separated host flags: keep the non-ISA ones."""
    parts = [p for p in re.split(r"[,\s]+", value) if p]
    return [p for p in parts if not owned(p, cfg)], [p for p in parts if owned(p, cfg)]


def rewrite(args, is_nvcc: bool, cfg):
    """(kept args, removed args) with the policy's ISA flags taken out."""
    kept, removed = [], []
    arch_opts, host_opts = set(cfg["nvcc_arch_options"]), set(cfg["nvcc_host_options"])
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if is_nvcc and name in arch_opts:
            if eq:
                removed.append(arg)
            else:
                removed += args[i:i + 2]
                i += 1
        elif is_nvcc and name in host_opts:
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            keep, drop = strip_host_flags(value, cfg)
            removed += drop
            if keep:
                kept.append(f"-Xcompiler={','.join(keep)}")
        elif not is_nvcc and owned(arg, cfg):
            removed.append(arg)
        else:
            kept.append(arg)
        i += 1
    return kept, removed


def find_unit(args):
    source = next((a for a in reversed(args) if a.endswith(SOURCE_SUFFIXES) and not a.startswith("-")), None)
    obj = None
    for i, a in enumerate(args):
        if a == "-o" and i + 1 < len(args):
            obj = args[i + 1]
        elif a.startswith("-o") and len(a) > 2:
            obj = a[2:]
    return source, obj


def scan_error(source: str, cls: str, rule: str, cfg):
    scan = cfg["content_scan"]
    if cls == scan["must_be"] or not source.endswith(tuple(scan["suffixes"])):
        return None
    try:
        with open(source, errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    match = re.search(scan["pattern"], text)
    if not match:
        return None
    line = text.count("\n", 0, match.start()) + 1
    return (f"amxforge: {source}:{line}: uses AMX intrinsics ({match.group(0)!r}) but is classed {cls} by rule "
            f"{rule!r}; add it to an amx rule in toolchain/classes.toml")


def append_ledger(path: str, entry: dict) -> None:
    line = json.dumps(entry) + "\n"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # parallel compiles append whole lines
        handle.write(line)
        fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv) -> int:
    if len(argv) < 3:
        print("usage: python -m amxforge.fork.shim CONFIG.json <compiler> <args...>", file=sys.stderr)
        return 2
    with open(argv[1]) as handle:
        cfg = json.load(handle)
    compiler, args = argv[2], argv[3:]
    source, obj = find_unit(args)
    if source is None or "-c" not in args:  # not a compilation (a link, a version query): untouched
        os.execvp(compiler, [compiler, *args])
    is_nvcc = os.path.basename(compiler).startswith("nvcc")
    src_abs = os.path.abspath(source)
    root = cfg["fork_root"]
    rel = os.path.relpath(src_abs, root) if src_abs.startswith(root + os.sep) else src_abs
    cls, rule, glob = classify(rel, cfg["rules"])
    error = scan_error(src_abs, cls, rule, cfg)
    if error:
        print(error, file=sys.stderr)
        return 1
    kept, removed = rewrite(args, is_nvcc, cfg)
    added = list(cfg["cuda_flags"] if is_nvcc else cfg["class_flags"][cls if cls != "cuda" else "default"])
    final = [compiler, *kept, *added]
    if cfg.get("ccache") and not is_nvcc:
        final = [cfg["ccache"], *final]
    t0 = time.monotonic()
    rc = subprocess.call(final)
    append_ledger(cfg["ledger"], {
        "source": rel, "path": src_abs, "object": os.path.abspath(obj) if obj else None, "class": cls, "rule": rule, "glob": glob,
        "removed": removed, "added": added, "flags_in": [compiler, *args], "command": final, "rc": rc,
        "seconds": round(time.monotonic() - t0, 3), "variant": cfg["variant"],
    })
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
