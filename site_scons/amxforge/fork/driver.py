"""Drive a fork's OWN CMake (it knows its source lists) with amxforge's shim as the compiler launcher, build the
targets asked for, and install them behind the launcher: real binaries in build/VARIANT/libexec/, the launcher in
build/VARIANT/bin/, shared libraries in build/VARIANT/lib/ (rpath $ORIGIN/../lib).

State, so that a failed build never damages the last good one:
  build/VARIANT/fork-work/<tree>/   the CMake binary dir of each tree (incremental; one per fork path, so building
                                    another tree, or a broken copy, never touches this one)
  build/VARIANT/fork/ledger.jsonl   the units of the last GOOD build (one line each, with its object's size and hash)
  build/VARIANT/fork/amxforge-build.json   the record of that build: tree, targets, every installed file's hash
Outputs (libexec/, bin/, lib/, the ledger, the record) change only after configure, build and collection all
succeeded; each file is replaced atomically and the record is written last."""

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from .. import atomic
from ..cache import namespace as cache_namespace
from ..errors import AmxforgeError
from . import cmake
from .detect import ForkInfo
from .backend import LIBRARY as BACKEND_LIBRARY, DynamicBackend
from .hook import HOOK_ARCHIVE, LinkWrap, check_choice
from .kinds import kinds
from .record import last_good, load_record, object_problem, read_snapshot, retire, verify_record, write_record
from .ledger import LEDGER, ledger_lines, read_ledger, snapshot_entry
from .ninja import Ninja

STAMP = "amxforge-stamp.json"
LIVE_LEDGER = "ledger.live.jsonl"


def tool(name: str) -> str:
    """cmake/ninja from this environment (the PyPI wheels) first, then PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise AmxforgeError(f"{name} not found: pip install {name} (amxforge installs it with pip install -e .)")
    return found


def tree_id(fork: ForkInfo) -> str:
    return f"{fork.kind.replace('+', '-')}-{hashlib.sha256(str(fork.root).encode()).hexdigest()[:10]}"


class ForkBuild:
    def __init__(self, ctx, fork: ForkInfo, targets, jobs: int = None, log=print, cache: str = None, dist=None,
                 kernels: str = "fork"):
        from ..cache import parse_cache_url
        self.ctx, self.fork, self.targets = ctx, fork, list(targets)
        self.kernels = check_choice(kernels)
        self.cache = parse_cache_url(cache) if cache else None  # a shared (remote) compile cache: ccache's
        # dist.check() of a usable icecream scheduler, with the pinned toolchain (made when the build was configured)
        self.dist = dist if dist and dist.get("usable") else None
        self.ledger_offset = 0  # the live ledger's size when this build started
        self.jobs = jobs or os.cpu_count() or 1
        self.state = ctx.build_dir / "fork"  # the last good build's ledger and record
        self.dir = ctx.build_dir / "fork-work" / tree_id(fork)  # CMake's binary dir for this tree
        self.icecc_logs = self.dir / "icecc-logs"  # one debug log per unit icecc ran for
        self.ledger = self.dir / LIVE_LEDGER
        self.shim = ctx.build_dir / "libexec" / "amxforge-shim"  # kernels/launcher/shim.c, built by SCons first
        self.launcher = ctx.build_dir / "libexec" / "amxforge-launch"
        self.log = log
        self.ninja = Ninja(tool("ninja"), self.dir, log)
        # the paths CMake is given: the real ones, or links to them where they hold a character CMake cannot take
        self.cmake_source = cmake.cmake_visible(fork.root)
        self.cmake_project = cmake.cmake_visible(ctx.project_dir)
        self.cmake_dir = self.cmake_project / self.dir.relative_to(ctx.project_dir)
        self.ccache = shutil.which("ccache")
        self.statslog = self.dir / "ccache-stats.log"  # which cache each compilation of this build hit
        self.cache_remote = None  # {"url", "reachable"} once build() has looked
        # a namespace only when sharing beyond this builder: locally, identical units of two variants (the protected
        # ones) should keep hitting each other's entries
        self.cache_namespace = cache_namespace(ctx) if self.cache else None
        records = self.shim_config()
        # named by its content: a policy change changes every compile command, so ninja recompiles what it affects;
        # the shim writes the same name into every ledger line, which the build's proof checks
        self.policy_id = hashlib.sha256(records.encode()).hexdigest()[:12]
        self.config_path = self.dir / f"amxforge-shim-{self.policy_id}.conf"
        self.config_text = f"policy\t{self.policy_id}\n" + records
        # fork_kernels=amxforge: the shim links too, with our handler (fork/hook.py); its own config
        route = fork.spec.kernels["route"] if self.kernels == "amxforge" else None
        self.route = LinkWrap(fork, ctx.build_dir / "lib" / HOOK_ARCHIVE, self.dir) if route == "link-wrap" else None
        # ... or our backend library, which kernels/SConscript builds against the tree's headers (fork/backend.py)
        self.backend = DynamicBackend(fork, ctx.build_dir / "lib" / BACKEND_LIBRARY) if route == "backend" else None
        if self.route:
            archive = self.cmake_project / self.route.archive.relative_to(ctx.project_dir)
            text = self.config_text + "".join("\t".join(r) + "\n" for r in self.route.records(str(archive)))
            self.link_config_path = self.dir / f"amxforge-link-{hashlib.sha256(text.encode()).hexdigest()[:12]}.conf"
            self.link_config_text = text

    # --- what the shim needs, precomputed (one record per line, tab-separated: see kernels/launcher/shim.c) ---
    def shim_config(self) -> str:
        policy, variant, isa = self.ctx.policy, self.ctx.variant, self.ctx.policy.isa
        owned = sorted({f.flag for f in isa.features.values()} | {f.clang_flag for f in isa.features.values()} |
                       {f.no_flag for f in isa.features.values()} | {lv.march for lv in isa.levels.values()})
        records = [["variant", self.ctx.name], ["root", str(self.fork.root)], ["ledger", str(self.ledger)],
                   ["owned", *owned], ["prefix", *isa.shim_prefixes],
                   ["nvcc_arch", *isa.nvcc_arch_options], ["nvcc_host", *isa.nvcc_host_options],
                   ["scan", policy.classes.scan.pattern], ["scan_must_be", policy.classes.scan_class],
                   ["scan_suffix", *policy.classes.scan_suffixes]]
        if self.ccache:
            records.append(["ccache", self.ccache])
        records.append(["common", *self.ctx.reproducible_flags(self.cmake_source, self.fork.kind, self.cmake_dir)])
        for rule_id, cls, globs in policy.classes.rules:
            records += [["rule", rule_id, cls, glob, regex.pattern] for glob, regex in globs]
        for cls in policy.classes_for(variant, cpu_only=True):
            records.append(["class", cls, *self.ctx.class_flags(cls)])
        for cls in set(policy.classes_for(variant)) - set(policy.classes_for(variant, cpu_only=True)):
            records.append(["cuda", *self.ctx.class_flags(cls)])  # what nvcc units get (the shim's one GPU record)
        return "".join("\t".join(r) + "\n" for r in records)

    @property
    def launcher_argv(self) -> list:
        """The launcher as CMake is told it and writes it into every compile command: the shim and its config."""
        return [str(self.cmake_project / self.shim.relative_to(self.ctx.project_dir)),
                str(self.cmake_dir / self.config_path.name)]

    def linker_launcher(self) -> str:
        """CMake's linker launcher: the shim with the link config (fork_kernels=amxforge), else none (set empty,
        so that a cache from an earlier amxforge build forgets it)."""
        if not self.route:
            return ""
        return ";".join([self.launcher_argv[0], str(self.cmake_dir / self.link_config_path.name)])

    def cmake_args(self) -> list:
        """What amxforge gives CMake (each -D a setting the build then checks in the cache); computed once."""
        if getattr(self, "_cmake_args", None) is None:
            self._cmake_args = self._make_cmake_args()
        return list(self._cmake_args)

    def _make_cmake_args(self) -> list:
        opts, variant = set(self.fork.options), self.ctx.variant
        launcher = ";".join(self.launcher_argv)
        args = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}", "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_C_COMPILER={self.ctx.compiler.path}", f"-DCMAKE_CXX_COMPILER={self.ctx.cxx.path}",
                f"-DCMAKE_C_COMPILER_LAUNCHER={launcher}", f"-DCMAKE_CXX_COMPILER_LAUNCHER={launcher}",
                f"-DCMAKE_C_LINKER_LAUNCHER={self.linker_launcher()}",
                f"-DCMAKE_CXX_LINKER_LAUNCHER={self.linker_launcher()}",
                "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib;$ORIGIN"]
        # the kind's settings (toolchain/forks.toml), as functions of the variant's facts
        facts = {"amx": bool(variant.amx) and self.fork.has_amx_backend, "cuda": variant.cuda}
        args += [f"-D{s.name}={s.render(facts)}" for s in kinds().settings if s.when == "always" or s.name in opts]
        text = atomic.read_text(self.fork.root / "CMakeLists.txt")
        if variant.cuda:
            nvcc = self.nvcc()
            # CMake only needs to stop asking for `native`; the shim renders the real -gencode flags
            archs = ";".join(a.rstrip("abcdefghijklmnopqrstuvwxyz") + "-real" for a in self.ctx.cuda_archs)
            args += [f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCMAKE_CUDA_COMPILER_LAUNCHER={launcher}",
                     f"-DCMAKE_CUDA_ARCHITECTURES={archs}", f"-DCMAKE_CUDA_HOST_COMPILER={self.ctx.cxx.path}"]
            if re.search(r"CMAKE_CXX_STANDARD\s+20|cxx_std_20", text):
                args.append("-DCMAKE_CUDA_STANDARD=17")  # nvcc rejects the fork's C++20 in CUDA units
        return args

    def nvcc(self):
        """The nvcc this variant's configure is given (the probe's), None for a variant without CUDA."""
        return (self.ctx.probe["cuda"]["nvcc"] or {}).get("path") if self.ctx.variant.cuda else None

    def stamp(self) -> dict:
        return {"fork": str(self.fork.root), "args": self.cmake_args(), "variant": self.ctx.name}

    def _read_stamp(self):
        try:
            return atomic.read_json(self.dir / STAMP, "configure stamp")
        except (FileNotFoundError, AmxforgeError):
            return None  # absent or damaged: configure again

    # --- up to date? (for scons -q: SCons asks this instead of always running the step) ------------------------
    def state_token(self) -> str:
        """Equal between two scons runs iff nothing would be rebuilt or reinstalled: the configure stamp holds, the
        CMake cache still holds amxforge's settings, ninja has no work, every compile of the graph is proven by the
        ledger, and the last good build's record, ledger and installed files are intact."""
        problems = []
        if self.configure_needed():
            problems.append("configure")
        elif not self.ninja.up_to_date(self.targets):
            problems.append("ninja")
        else:
            try:
                self.prove()
            except AmxforgeError as exc:
                problems.append(str(exc))
        try:
            record = load_record(self.ctx.build_dir)
            if record.get("fork", {}).get("root") != str(self.fork.root) or record.get("targets") != self.targets:
                problems.append("record is for another build")
            problems += verify_record(record, self.ctx.project_dir)
        except (FileNotFoundError, AmxforgeError) as exc:
            problems.append(str(exc))
        if problems:
            return "stale: " + os.urandom(8).hex()  # never equal: the step runs
        return json.dumps({"stamp": self.stamp(), "config": self.config_text, "record": record["sha256"]})

    # --- steps ------------------------------------------------------------------------------------------------
    def configure_needed(self) -> bool:
        """Configure runs when its stamp changed, it left no build.ninja or target description, or CMake's cache no
        longer holds what amxforge set (CMake deletes its cache when the compiler changes, and every -D with it)."""
        return (self._read_stamp() != self.stamp() or not (self.dir / "build.ninja").is_file()
                or not cmake.has_codemodel(self.dir)
                or bool(cmake.cache_mismatches(cmake.read_cache(self.dir), cmake.definitions(self.cmake_args()))))

    def configure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.shim.is_file():
            raise AmxforgeError(f"{self.shim} missing: build the variant's kernels first (scons variant={self.ctx.name})")
        try:
            current = atomic.read_text(self.config_path)
        except OSError:
            current = None
        if current != self.config_text:
            atomic.write_text(self.config_path, self.config_text)
        if self.route and not self.link_config_path.is_file():
            atomic.write_text(self.link_config_path, self.link_config_text)
        if not self.configure_needed():
            return
        owned = cmake.definitions(self.cmake_args())
        cache = cmake.read_cache(self.dir)
        # an interrupted or failed configure can leave a cache without build.ninja, and a changed compiler makes
        # CMake drop amxforge's settings: start afresh rather than trust either
        fresh = not (self.dir / "build.ninja").is_file() or bool(cmake.resets_cache(cache, owned))
        self.log(f"amxforge: configuring {self.fork.kind} ({self.fork.root}) in "
                 f"{self.dir.relative_to(self.ctx.project_dir)}")
        for attempt in range(2):
            if fresh:
                self._forget_cmake_cache()
            self._run_cmake()
            wrong = cmake.cache_mismatches(cmake.read_cache(self.dir), owned)
            if not wrong:
                break
            if fresh:
                (self.dir / "build.ninja").unlink(missing_ok=True)
                raise AmxforgeError(f"the fork's CMake does not keep amxforge's settings in a fresh configure of "
                                    f"{self.fork.root}: {'; '.join(wrong)} (its CMakeLists.txt overrides them); "
                                    f"nothing was built, the last good build is untouched")
            self.log(f"amxforge: the CMake cache in {self.dir.relative_to(self.ctx.project_dir)} lost amxforge's "
                     f"settings ({wrong[0]}): configuring afresh")
            fresh = True
        atomic.write_json(self.dir / STAMP, self.stamp())

    def _forget_cmake_cache(self) -> None:
        for leftover in ("CMakeCache.txt", "CMakeFiles"):
            path = self.dir / leftover
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    def _run_cmake(self) -> None:
        log_path = self.dir / "cmake-configure.log"
        cmake.request_codemodel(self.dir)
        cmd = [tool("cmake"), "-S", str(self.cmake_source), "-B", str(self.cmake_dir), *self.cmake_args()]
        (self.dir / STAMP).unlink(missing_ok=True)
        res = subprocess.run(cmd, capture_output=True, text=True)
        atomic.write_text(log_path, f"$ {shlex.join(cmd)}\n{res.stdout}\n{res.stderr}")
        if res.returncode != 0:
            (self.dir / "build.ninja").unlink(missing_ok=True)
            error = first_error(res.stdout + res.stderr)
            advice = missing_cuda_part(error, self.nvcc())
            raise AmxforgeError(f"CMake configure of {self.fork.root} failed: {error}{advice} "
                                f"(full log: {log_path}; the last good build is untouched)")

    def programs(self) -> dict:
        """{name: file} of the tree's executable targets (CMake's File API), for fork_targets."""
        return {name: t["artifacts"][0] for name, t in cmake.targets(self.dir).items()
                if t["type"] == "EXECUTABLE" and t["artifacts"]}

    def check_targets(self) -> dict:
        """fork_targets must name programs of the tree; one line listing them otherwise."""
        described = cmake.targets(self.dir)
        programs = self.programs()
        for target in self.targets:
            if target in programs:
                continue
            shown = ", ".join(n for n in sorted(programs) if not n.startswith("test-"))
            owner = next((n for n, t in described.items() if any(a.name == target for a in t["artifacts"])), target)
            kind = described.get(owner, {}).get("type")
            what = (f"{target} is {'the file of ' if owner != target else ''}a "
                    f"{kind.lower().replace('_', ' ')} target{f' ({owner})' if owner != target else ''} of "
                    f"{self.fork.root}, not a program" if kind else f"{target} is not a target of {self.fork.root}")
            raise AmxforgeError(f"fork_targets: {what}; fork_targets takes its programs: {shown or 'none'} (the "
                                f"shared libraries they use are installed with them)")
        return {t: programs[t] for t in self.targets}

    def build(self) -> None:
        self.check_targets()
        self.repair_objects()
        self.ledger_offset = self.ledger.stat().st_size if self.ledger.is_file() else 0
        if self.route:
            self.route.before_build(self.log)
        rc = self.ninja.build(self.targets, self.jobs, dict(os.environ, **self.cache_env(), **self.dist_env()))
        if rc != 0:
            raise AmxforgeError(f"the fork build failed (compiler output above; ledger: {self.ledger}); the last "
                                f"good build is untouched")
        wrong = cmake.cache_mismatches(cmake.read_cache(self.dir), cmake.definitions(self.cmake_args()))
        if wrong:  # ninja re-ran CMake during the build, and it lost amxforge's settings
            raise AmxforgeError(f"the fork's CMake cache lost amxforge's settings during the build ({wrong[0]}); "
                                f"nothing was installed, the next build configures afresh")

    def cache_env(self) -> dict:
        """ccache's settings for this build; the remote cache only when it answers now (else one warning line)."""
        from ..cache import ccache_settings
        base = Path(os.path.commonpath([self.ctx.project_dir, self.fork.root]))
        env, self.cache_remote = ccache_settings(self.ccache, self.cache, self.cache_namespace, base, self.statslog,
                                                 warn)
        return env

    def dist_env(self) -> dict:
        """The shim's settings for compiling on the scheduler's hosts (dist=icecc), with the pinned toolchain."""
        shutil.rmtree(self.icecc_logs, ignore_errors=True)
        if not self.dist:
            return {}
        self.icecc_logs.mkdir(parents=True, exist_ok=True)
        return {"AMXFORGE_ICECC": self.dist["icecc"], "AMXFORGE_ICECC_LOGS": str(self.icecc_logs),
                "ICECC_VERSION": self.dist["toolchain"]["path"]}

    def dist_outcomes(self, units: list, compiled_now: set, old: list) -> dict:
        """Where each unit compiled (remote host, here, here after a remote failure, or nowhere: a cache hit); a unit
        not compiled in this build keeps the last good build's. Returns the totals for the record."""
        from .. import dist
        before = {e["object"]: {k: e[k] for k in ("where", "host", "retried") if k in e} for e in old}
        names = {d["ip"]: d["name"] for d in (self.dist or {}).get("daemons", [])}
        counts = {"remote": 0, "local": 0, "retried": 0, "cache": 0}
        hosts = {}
        for unit in units:
            for key in ("where", "host", "retried"):
                unit.pop(key, None)
            mode, now = unit.get("dist"), None
            if unit["object"] in compiled_now and unit.get("cache") in ("remote", "local"):
                now = {"where": "cache"}  # from ccache: compiled nowhere in this build
            elif mode == "icecc":
                log = unit.get("icecc_log")
                now = (dist.where(log) if log and Path(log).is_file() else None) or \
                    ({"where": "cache"} if unit["object"] in compiled_now else None)
            elif mode or unit["object"] in compiled_now:
                now = {"where": "local"}  # nvcc units (icecream distributes gcc/clang only) and builds without dist
            unit.update(now or before.get(unit["object"]) or {"where": "local"})
            if now and now.get("host") in names:
                unit["host"] = now["host"] = f"{names[now['host']]} ({now['host']})"
            if now:
                counts["retried" if now.get("retried") else now["where"]] += 1
                if now.get("host"):
                    hosts[unit["host"]] = hosts.get(unit["host"], 0) + 1
        return {"engine": "icecc" if self.dist else None, "scheduler": (self.dist or {}).get("scheduler"),
                "compiled_remote": counts["remote"], "compiled_local": counts["local"],
                "retried_local": counts["retried"], "cache_hits": counts["cache"], "hosts": hosts,
                "toolchain": (self.dist or {}).get("toolchain")}

    def cache_outcomes(self, units: list, old: list) -> dict:
        """Each unit's cache outcome in this build (remote, local, miss; a unit not compiled now keeps the last good
        build's), and the totals for the record."""
        from ..cache import read_statslog
        # ccache names a source as the compiler got it (through a CMake-visible link, maybe); the ledger, resolved
        now = {os.path.realpath(os.path.join(self.dir, src)): how for src, how in read_statslog(self.statslog).items()}
        before = {e["object"]: e.get("cache") for e in old}
        counts = {"remote": 0, "local": 0, "miss": 0, "uncached": 0}
        for unit in units:
            how = now.get(os.path.realpath(unit["path"])) if "path" in unit else None
            unit["cache"] = how or before.get(unit["object"]) or ("not compiled in this build" if self.ccache
                                                                   else "no ccache")
            if how:
                counts[how] += 1
        hits = counts["remote"] + counts["local"]
        return {"hits": hits, "misses": counts["miss"], "remote_hits": counts["remote"], "local_hits": counts["local"],
                "uncached": counts["uncached"], "hit_rate": round(hits / (hits + counts["miss"]), 3)
                if hits + counts["miss"] else None, "namespace": self.cache_namespace,
                "remote": self.cache_remote}

    def repair_objects(self) -> None:
        """Objects that no longer match the last good build (truncated, overwritten) or that the ledger does not
        prove (compiled outside amxforge's launcher, or under another policy) are removed, so that ninja compiles
        them again through the launcher: it judges by timestamps and would keep them."""
        for entry in read_snapshot(self.state / LEDGER, missing_ok=True):
            obj = Path(entry["object"])
            if obj.is_relative_to(self.dir) and obj.is_file() and object_problem(entry):
                self.log(f"amxforge: {obj.relative_to(self.ctx.project_dir)} does not match the last good build: "
                         f"compiling it again")
                obj.unlink()
        _, problems = self.examine()
        stale = [(obj, why) for obj, why, again in problems if again and os.path.isfile(obj)]
        for obj, why in stale:
            os.unlink(obj)
        if stale:
            obj, why = stale[0]
            more = f" (and {len(stale) - 1} more)" if len(stale) > 1 else ""
            self.log(f"amxforge: {Path(obj).relative_to(self.ctx.project_dir)} {why}{more}: compiling again")

    def compiled_now(self) -> set:
        """The objects compiled in this build: the live ledger's lines written since build() started."""
        return {e["object"] for e in read_ledger(self.ledger, offset=self.ledger_offset)}

    def examine(self) -> tuple:
        """Which compilations of the targets' graph the ledger proves: every one must run amxforge's launcher with
        this policy's configuration (build.ninja), and its object must be the one the launcher's ledger line
        recorded (same policy, same size and mtime: nothing compiled it since). Returns (proven ledger entries,
        [(object, why not, whether compiling it again would help)])."""
        edges = self.ninja.compile_edges()
        inputs = self.ninja.inputs(self.targets)
        objects = sorted(o for o in edges if o in inputs)
        launcher = self.launcher_argv
        ledger = {os.path.normpath(e["object"]): e for e in read_ledger(self.ledger)}
        entries, problems = [], []
        for obj in objects:
            entry = ledger.get(obj)
            try:
                st = os.stat(obj)
            except OSError:
                st = None
            if edges[obj][:2] != launcher:
                problems.append((obj, f"compiles without amxforge's launcher ({shlex.join(edges[obj][:3])} ...)",
                                 False))
            elif st is None:
                problems.append((obj, "is missing", True))
            elif entry is None:
                problems.append((obj, "has no ledger line: it was not compiled through amxforge's launcher", True))
            elif entry.get("policy") != self.policy_id:
                problems.append((obj, f"was compiled under another policy ({entry.get('policy') or 'none'}, this "
                                      f"build's is {self.policy_id})", True))
            elif [st.st_size, st.st_mtime_ns] != [entry.get("object_size"), entry.get("object_mtime_ns")]:
                problems.append((obj, "is not the object amxforge's launcher compiled (changed since)", True))
            else:
                entries.append(entry)
        if not objects:
            problems.append((str(self.dir), f"the build graph of {', '.join(self.targets)} has no compilation",
                             False))
        return entries, problems

    def prove(self) -> list:
        """The proven ledger entries of the targets' graph; an error naming the first unproven unit otherwise."""
        entries, problems = self.examine()
        if problems:
            obj, why, _ = problems[0]
            raise AmxforgeError(f"the fork build does not prove its policy: {len(problems)} of "
                                f"{len(problems) + len(entries)} units unproven, e.g. {obj} {why}")
        return entries

    def units(self) -> list:
        """The proven ledger entries of every object the targets link, with each object's size and hash."""
        return [snapshot_entry(e) for e in self.prove()]

    def built_files(self) -> list:
        """[(built file, where it installs)]: the targets into libexec/ (each behind a copy of the launcher in bin/)
        and the shared libraries they use into lib/."""
        build = self.ctx.build_dir
        pairs = []
        for target, program in self.check_targets().items():
            if not program.is_file():
                raise AmxforgeError(f"fork target {target} was built but its program {program} is missing")
            pairs += [(program, build / "libexec" / target), (self.launcher, build / "bin" / target)]
        for lib in sorted(self.dir.rglob("lib*.so*")):
            if lib.is_file() and "CMakeFiles" not in lib.parts:
                pairs.append((lib, build / "lib" / lib.name))
        return pairs

    def install(self, pairs) -> list:
        """Every file of built_files() replaced atomically; returns [(path, sha256, size)]."""
        for sub in ("bin", "libexec", "lib"):
            (self.ctx.build_dir / sub).mkdir(parents=True, exist_ok=True)
        if not self.launcher.is_file():
            raise AmxforgeError(f"{self.launcher} missing: build the variant's kernels first")
        installed = []
        for src, dest in pairs:
            data = src.read_bytes()
            atomic.write_bytes(dest, data, mode=0o755)
            installed.append({"path": dest.relative_to(self.ctx.project_dir).as_posix(),
                              "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
        return installed

    def kernels_record(self, pairs) -> dict:
        """fork_kernels and, for ours, the proof of the wrap in every installed file that names the entry, or of
        the backend library."""
        if self.backend:
            return self.backend.record(self.ctx.project_dir)
        if not self.route:
            return {"choice": "fork"}
        proven = self.route.prove([src for src, _ in pairs if src != self.launcher])
        digest = self.route.archive_digest()
        self.route.after_build(proven, digest)
        installs = {str(src): dest for src, dest in pairs}
        return {"choice": "amxforge", "route": "link-wrap", "entries": self.route.symbols, "archive_sha256": digest,
                "proven": {installs[p].relative_to(self.ctx.project_dir).as_posix(): v["wrapped"]
                           for p, v in proven.items()},
                "linked_now": [e["output"] for e in ledger_lines(self.ledger, self.ledger_offset)
                               if e.get("mode") == "link" and e.get("wrapped")]}

    def run(self) -> dict:
        self.configure()
        self.build()
        units = self.units()
        old = last_good(self.ctx.build_dir)
        old_units = read_snapshot(self.state / LEDGER, missing_ok=True) if old else []
        cache = self.cache_outcomes(units, old_units)
        dist = self.dist_outcomes(units, self.compiled_now(), old_units)
        pairs = self.built_files()
        kernels = self.kernels_record(pairs)
        installed = self.install(pairs)
        self.state.mkdir(parents=True, exist_ok=True)
        ledger_text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in units)
        atomic.write_text(self.state / LEDGER, ledger_text)
        record = {"format": 1, "fork": self.fork.as_dict(), "variant": self.ctx.name, "targets": self.targets,
                  "compilers": {"cc": self.ctx.cc_name, "cxx": self.ctx.cxx_name},  # as given: CC=, CXX=
                  "cuda_archs": list(self.ctx.cuda_archs), "kernels": kernels,
                  "work_dir": self.dir.relative_to(self.ctx.project_dir).as_posix(),
                  "ledger": {"path": (self.state / LEDGER).relative_to(self.ctx.project_dir).as_posix(),
                             "sha256": hashlib.sha256(ledger_text.encode()).hexdigest(), "units": len(units)},
                  "installed": installed}
        if self.ccache:
            record["ccache"] = cache
        record["dist"] = dist
        write_record(self.ctx.build_dir, record)
        if old:  # files the previous good build installed that this one does not: gone with it
            keep = {f["path"] for f in installed}
            retire(self.ctx.project_dir, [f for f in old.get("installed", []) if f["path"] not in keep])
        return record


def warn(line: str) -> None:
    print(line, file=sys.stderr)


FIRST_ERROR_MAX = 240


def missing_cuda_part(error: str, nvcc) -> str:
    """Advice for a configure that failed on an imported CUDA target the toolkit does not have (a GPU-less builder's
    nvcc without cuBLAS or the driver's link stub): the part to install, from toolchain/cuda.toml [toolkit_parts],
    naming the toolkit of `nvcc` (the one the configure was given) where there is one."""
    found = re.search(r"links to: (CUDA::(\w+)) but the target was not found", error)
    if not found:
        return ""
    from ..policy.cuda_arch import cuda_facts
    parts = cuda_facts().get("toolkit_parts", {})
    part = parts.get(found.group(2), f"the library behind {found.group(1)}")
    toolkit = f"The CUDA toolkit of {nvcc}" if nvcc else "The CUDA toolkit"
    return f" {toolkit} lacks {part}: install it, or build a variant without CUDA."


def first_error(text: str) -> str:
    """The fork's own error, in one line: the first 'CMake Error' and its message, the indented lines after it
    (CMake spreads one message over several: 'Target "ggml" links to:', the missing target, 'but the target was
    not found'), cut at FIRST_ERROR_MAX characters."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "CMake Error" in line or line.startswith("ERROR"):
            message = []
            for follow in lines[i + 1:]:
                if follow.strip() and not follow[:1].isspace():
                    break  # the message ends at the next line that is not indented
                message.append(follow.strip())
            detail = " ".join(" ".join(message).split()).split(" Possible reasons include:")[0]  # CMake's boilerplate
            detail = detail or next((l.strip() for l in lines[i + 1:i + 6] if l.strip()), "")  # an unindented one
            if len(detail) > FIRST_ERROR_MAX:
                detail = detail[:FIRST_ERROR_MAX].rsplit(" ", 1)[0] + " ..."
            return f"{line.strip()} {detail}".strip()
    return next((l.strip() for l in reversed(lines) if l.strip()), "no output")
