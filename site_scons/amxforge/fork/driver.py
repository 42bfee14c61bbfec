"""Drive a fork's OWN CMake (it knows its source lists) into build/VARIANT/fork with amxforge's shim as the compiler
launcher, build the targets asked for, and install them into build/VARIANT/bin and lib/ with a working rpath."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import AmxforgeError
from ..paths import toolchain_dir
from ..tomlfile import load_toml
from .detect import ForkInfo

STAMP = "amxforge-stamp.json"


def tool(name: str) -> str:
    """cmake/ninja from this environment (the PyPI wheels) first, then PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise AmxforgeError(f"{name} not found: pip install {name} (amxforge installs it with pip install -e .)")
    return found


class ForkBuild:
    def __init__(self, ctx, fork: ForkInfo, targets, jobs: int = None, log=print):
        self.ctx, self.fork, self.targets = ctx, fork, list(targets)
        self.jobs = jobs or os.cpu_count() or 1
        self.dir = ctx.build_dir / "fork"
        self.ledger = self.dir / "ledger.jsonl"
        self.config_path = self.dir / "amxforge-shim.conf"
        self.shim = ctx.build_dir / "bin" / "amxforge-shim"  # kernels/launcher/shim.c, built by SCons first
        self.log = log
        self.ccache = shutil.which("ccache")

    # --- what the shim needs, precomputed (one record per line, tab-separated: see kernels/launcher/shim.c) ---
    def shim_config(self) -> str:
        policy, variant, isa = self.ctx.policy, self.ctx.variant, self.ctx.policy.isa
        shim = load_toml(toolchain_dir() / "isa.toml").get("shim", {})
        owned = sorted({f.flag for f in isa.features.values()} | {f.clang_flag for f in isa.features.values()} |
                       {f.no_flag for f in isa.features.values()} | {lv.march for lv in isa.levels.values()})
        records = [["variant", self.ctx.name], ["root", str(self.fork.root)], ["ledger", str(self.ledger)],
                   ["owned", *owned], ["prefix", *shim.get("prefixes", [])],
                   ["nvcc_arch", *shim.get("nvcc_arch_options", [])], ["nvcc_host", *shim.get("nvcc_host_options", [])],
                   ["scan", policy.classes.scan.pattern], ["scan_must_be", policy.classes.scan_class],
                   ["scan_suffix", *policy.classes.scan_suffixes]]
        if self.ccache:
            records.append(["ccache", self.ccache])
        for rule_id, cls, globs in policy.classes.rules:
            records += [["rule", rule_id, cls, glob, regex.pattern] for glob, regex in globs]
        for cls in policy.classes.classes:
            if cls != "cuda":
                records.append(["class", cls, *self.ctx.class_flags(cls)])
        if variant.cuda:
            records.append(["cuda", *self.ctx.class_flags("cuda")])
        return "".join("\t".join(r) + "\n" for r in records)

    def cmake_args(self) -> list:
        opts, variant = set(self.fork.options), self.ctx.variant
        launcher = ";".join([str(self.shim), str(self.config_path)])
        args = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}", "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_C_COMPILER={self.ctx.compiler.path}", f"-DCMAKE_CXX_COMPILER={self.ctx.cxx.path}",
                f"-DCMAKE_C_COMPILER_LAUNCHER={launcher}", f"-DCMAKE_CXX_COMPILER_LAUNCHER={launcher}",
                "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib;$ORIGIN",
                # neutral arch setting: ISA flags come only from amxforge (the shim strips the rest)
                "-DGGML_NATIVE=OFF", "-DGGML_ARCH_FLAGS="]
        if "GGML_AVX512" in opts:
            args.append("-DGGML_AVX512=OFF")
        if "GGML_CCACHE" in opts:
            args.append("-DGGML_CCACHE=OFF")  # the shim chains ccache itself, after rewriting the command
        for amx_opt in ("GGML_AMX", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"):
            if amx_opt in opts:
                args.append(f"-D{amx_opt}={'ON' if variant.amx and self.fork.has_amx_backend else 'OFF'}")
        text = (self.fork.root / "CMakeLists.txt").read_text(errors="replace")
        if re.search(r"^\s*option\s*\(\s*LLAMA_CURL\b", text, re.MULTILINE):
            args.append("-DLLAMA_CURL=OFF")  # nothing to download in a variant build
        if "GGML_CUDA" in opts:
            args.append(f"-DGGML_CUDA={'ON' if variant.cuda else 'OFF'}")
        if variant.cuda:
            nvcc = (self.ctx.probe["cuda"]["nvcc"] or {}).get("path")
            # CMake only needs to stop asking for `native`; the shim renders the real -gencode flags
            archs = ";".join(a.rstrip("abcdefghijklmnopqrstuvwxyz") + "-real" for a in self.ctx.cuda_archs)
            args += [f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCMAKE_CUDA_COMPILER_LAUNCHER={launcher}",
                     f"-DCMAKE_CUDA_ARCHITECTURES={archs}", f"-DCMAKE_CUDA_HOST_COMPILER={self.ctx.cxx.path}"]
            if re.search(r"CMAKE_CXX_STANDARD\s+20|cxx_std_20", text):
                args.append("-DCMAKE_CUDA_STANDARD=17")  # nvcc rejects the fork's C++20 in CUDA units
        return args

    # --- steps ------------------------------------------------------------------------------------------------
    def configure(self) -> None:
        stamp = {"fork": str(self.fork.root), "args": self.cmake_args(), "variant": self.ctx.name}
        stamp_path = self.dir / STAMP
        old = json.loads(stamp_path.read_text()) if stamp_path.is_file() else None
        if old is not None and old.get("fork") != stamp["fork"]:
            self.log(f"amxforge: build/{self.ctx.name}/fork was configured for {old.get('fork')}: starting afresh")
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.shim.is_file():
            raise AmxforgeError(f"{self.shim} missing: build the variant's kernels first (scons variant={self.ctx.name})")
        self.config_path.write_text(self.shim_config())
        if old == stamp and (self.dir / "build.ninja").is_file():
            return
        # an interrupted configure can leave a cache without build.ninja: start it again rather than trust it
        if not (self.dir / "build.ninja").is_file():
            for leftover in ("CMakeCache.txt", "CMakeFiles"):
                path = self.dir / leftover
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        log_path = self.dir / "cmake-configure.log"
        cmd = [tool("cmake"), "-S", str(self.fork.root), "-B", str(self.dir), *stamp["args"]]
        self.log(f"amxforge: configuring {self.fork.kind} ({self.fork.root}) into build/{self.ctx.name}/fork")
        res = subprocess.run(cmd, capture_output=True, text=True)
        log_path.write_text(f"$ {' '.join(cmd)}\n{res.stdout}\n{res.stderr}")
        if res.returncode != 0:
            stamp_path.unlink(missing_ok=True)
            raise AmxforgeError(f"CMake configure of {self.fork.root} failed: {first_error(res.stdout + res.stderr)} "
                                f"(full log: {log_path})")
        stamp_path.write_text(json.dumps(stamp, indent=1))

    def available_targets(self) -> list:
        res = subprocess.run([tool("ninja"), "-C", str(self.dir), "-t", "targets", "all"], capture_output=True,
                             text=True)
        names = set()
        for line in res.stdout.splitlines():
            name, _, kind = line.partition(": ")
            if kind.strip() == "phony" and "/" not in name and not name.startswith(("all", "clean", "help", "edit",
                                                                                      "rebuild", "install", "list")):
                names.add(name)
        return sorted(names)

    def build(self) -> None:
        known = self.available_targets()
        missing = [t for t in self.targets if t not in known]
        if missing:
            shown = ", ".join(t for t in known if not t.startswith("test-"))[:600]
            raise AmxforgeError(f"fork target(s) {', '.join(missing)} not in {self.fork.root}; its targets: {shown}")
        cmd = [tool("cmake"), "--build", str(self.dir), "--target", *self.targets, "--", f"-j{self.jobs}"]
        if subprocess.run(cmd).returncode != 0:
            raise AmxforgeError(f"the fork build failed (compiler output above); ledger: {self.ledger}")

    def install(self) -> list:
        """Copy the targets into build/VARIANT/bin and the shared libraries they use into build/VARIANT/lib."""
        bin_dir, lib_dir = self.ctx.build_dir / "bin", self.ctx.build_dir / "lib"
        bin_dir.mkdir(parents=True, exist_ok=True)
        lib_dir.mkdir(parents=True, exist_ok=True)
        installed = []
        for target in self.targets:
            found = [p for p in self.dir.rglob(target) if p.is_file() and os.access(p, os.X_OK)]
            if not found:
                raise AmxforgeError(f"fork target {target} was built but no executable named so is under {self.dir}")
            shutil.copy2(found[0], bin_dir / target)
            installed.append(bin_dir / target)
        for lib in self.dir.rglob("lib*.so*"):
            if lib.is_file() and "CMakeFiles" not in lib.parts:
                shutil.copy2(lib, lib_dir / lib.name)
        return installed

    def ccache_stats(self) -> dict:
        if not self.ccache:
            return {}
        out = subprocess.run([self.ccache, "--print-stats"], capture_output=True, text=True).stdout
        stats = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
        hits = int(stats.get("direct_cache_hit", 0)) + int(stats.get("preprocessed_cache_hit", 0))
        return {"hits": hits, "misses": int(stats.get("cache_miss", 0))}

    def run(self) -> dict:
        before = self.ccache_stats()
        self.configure()
        self.build()
        installed = self.install()
        after = self.ccache_stats()
        summary = {"fork": self.fork.as_dict(), "targets": self.targets,
                   "installed": [str(p.relative_to(self.ctx.project_dir)) for p in installed]}
        if before:
            hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
            summary["ccache"] = {"hits": hits, "misses": misses,
                                 "hit_rate": round(hits / (hits + misses), 3) if hits + misses else None}
        (self.dir / "amxforge-build.json").write_text(json.dumps(summary, indent=1))
        return summary


def first_error(text: str) -> str:
    """The fork's own error, in one line: the first 'CMake Error' and the message line after it."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "CMake Error" in line or line.startswith("ERROR"):
            detail = next((l.strip() for l in lines[i + 1:i + 6] if l.strip()), "")
            return f"{line.strip()} {detail}".strip()
    return next((l.strip() for l in reversed(lines) if l.strip()), "no output")
