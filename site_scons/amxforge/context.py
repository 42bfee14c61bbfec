"""One variant build's decisions, shared by `amxforge flags`, the SCons tools and the audit: which variant
(auto and native come from the probe), which compiler, which CUDA archs, and the flags of each unit."""

import json
import os
from pathlib import Path

from .argv import refuse_control_characters
from .errors import AmxforgeError
from .policy import Policy, UnitPolicy
from .policy.cuda_arch import SCONS as CUDA_SCONS, resolve_cuda_archs
from .policy.planner import accepted_flags, choose_auto, plan
from .probe import probe
from .probe.compilers import identify


class VariantContext:
    def __init__(self, variant: str, cc: str = None, cuda_arch: str = None, project_dir: Path = None,
                 cxx: str = None, fork=None, cuda_option: str = CUDA_SCONS):
        self.policy = Policy()
        self.project_dir = Path(project_dir or os.getcwd()).resolve()
        refuse_control_characters(self.project_dir, "the project directory")
        valid = self.policy.variants.names
        if variant not in valid:
            raise self.policy.variants.unknown(variant)
        self.probe = probe()
        self.cc_name = cc or os.environ.get("CC") or "gcc"  # as the user named it (CC=), for a rebuild to repeat
        self.compiler = identify(self.cc_name)
        self.plan = plan(self.policy, self.probe, self.compiler)  # judged with the compiler this build uses
        self.requested = variant
        self.name = choose_auto(self.plan) if variant == "auto" else variant
        self.variant = self.policy.variant(self.name, self.probe["cpu"]["features"])
        self.cxx_name = cxx or os.environ.get("CXX") or ("clang++" if self.compiler.family == "clang" else "g++")
        self.fork = fork
        if cuda_arch and not self.variant.cuda:
            cuda = ", ".join(n for n in self.policy.variants.raw if self.policy.variants.fields(n).get("cuda"))
            raise AmxforgeError(f"{cuda_option}{cuda_arch} is for CUDA variants ({cuda}); variant {self.name} has no "
                                f"CUDA units: leave {cuda_option.strip(' =')} out, or choose one of those variants")
        self.cuda_archs = resolve_cuda_archs(cuda_arch, self.probe, cuda_option) if self.variant.cuda else ()
        if fork is not None and self.cuda_archs:
            from .policy.cuda_arch import arch_specific, cuda_facts
            self.cuda_archs = arch_specific(self.cuda_archs, cuda_facts().get("arch_specific", []))
        self.build_dir = self.project_dir / "build" / self.name
        self.kernel_statslog = None  # ccache's log of the kernels' compiles, under cache= or dist=
        self.units = []
        self.launcher = None  # the SCons node of libexec/amxforge-launch (the launcher site tool)
        self.object_nodes = []  # SCons nodes, for the progress line
        self.compile_commands = []  # compile_commands.json entries with each unit's final command

    # --- what this variant is -------------------------------------------------------------------------
    @property
    def cxx(self):
        """The C++ compiler (fork builds): identified on first use."""
        return identify(self.cxx_name, "CXX")

    def runnable_here(self):
        """(True, None) or (False, why) for binaries of this variant on this host."""
        entry = self.plan.get(self.name, {})
        if entry.get("runnable"):
            return True, None
        return False, entry.get("why") or "unknown"

    def reproducible_flags(self, source, name: str, build=None) -> list:
        """Flags every compile gets so that objects do not depend on where the tree or the build lives."""
        from .templating import render
        # one flag per line: a path may hold spaces, so the text is never split on whitespace
        return [line.strip() for line in render("build", "reproducible.j2", source=str(source), mapped=name,
                                                 build=str(build) if build else None).splitlines() if line.strip()]

    def gpu_needs(self):
        """None for a CPU variant; for a CUDA variant the GPU code its cuda-class units get (from the rendered
        flags) and the driver its toolkit needs: what the selector checks against the host's devices."""
        if not self.variant.cuda:
            return None
        from .policy.cuda_arch import driver_number, gpu_code
        code = {"sass": [], "ptx": []}
        for cls in set(self.policy.classes_for(self.variant)) - set(self.policy.classes_for(self.variant, True)):
            for key, archs in gpu_code(self.class_flags(cls)).items():
                code[key] += [a for a in archs if a not in code[key]]
        return code | {"driver": driver_number(self.probe["cuda"]["nvcc"]["version"])}

    def class_flags(self, unit_class: str) -> tuple:
        return self.policy.class_flags(unit_class, self.variant, self.compiler, self.cuda_archs)

    def check_compiler_accepts(self) -> None:
        """Every flag the classes render must be taken by the compiler (C, and C++ for fork builds), each tested by
        the planner's cached compile; otherwise name the flag and the version that would take it."""
        compilers = [(self.compiler, "CC")] + ([(self.cxx, "CXX")] if self.fork is not None else [])
        for compiler, var in compilers:
            flags = []
            for cls in self.policy.classes_for(self.variant, cpu_only=True):
                flags += [f for f in self.policy.class_flags(cls, self.variant, compiler) if f not in flags]
            for flag, ok in accepted_flags(compiler.path, flags).items():
                if not ok:
                    feat = next((f for f in self.policy.isa.features.values() if flag in (f.flag, f.clang_flag)), None)
                    need = f" (needs {compiler.family} >= {feat.minimum[compiler.family]})" if feat else ""
                    raise AmxforgeError(f"{compiler.describe()} rejects {flag}{need}, which variant {self.name} "
                                        f"needs; pass {var}= a newer compiler or choose another variant")

    # --- units ----------------------------------------------------------------------------------------
    def unit(self, source) -> UnitPolicy:
        """Classify and render one unit; paths are matched relative to the project directory."""
        path = Path(source).resolve()
        try:
            rel = path.relative_to(self.project_dir).as_posix()
        except ValueError:
            rel = path.as_posix()
        return self.policy.unit(rel, path, self.variant, self.compiler, self.cuda_archs)

    def record(self, unit: UnitPolicy, obj) -> None:
        obj = Path(obj)
        rel_obj = obj.relative_to(self.project_dir).as_posix() if obj.is_absolute() else obj.as_posix()
        self.units.append(unit.as_dict() | {"object": rel_obj})

    def policy_document(self) -> dict:
        runnable, why = self.runnable_here()
        classes = {}
        for cls in self.policy.classes_for(self.variant):
            classes[cls] = {"flags": list(self.class_flags(cls)),
                            "features": self.policy.class_features(cls, self.variant, self.compiler)}
        return {
            "variant": self.name,
            "requested": self.requested,
            "summary": self.variant.summary,
            "level": self.variant.level,
            "features": list(self.variant.features),
            "amx": list(self.variant.amx),
            "cuda_archs": list(self.cuda_archs),
            "compiler": {"family": self.compiler.family, "version": self.compiler.version,
                         "path": self.compiler.path},
            "fork": self.fork.as_dict() if self.fork is not None else None,
            "runnable_here": runnable,
            "why_not_runnable": why,
            "classes": classes,
            "units": sorted(self.units, key=lambda u: u["object"]),
        }

    def policy_json(self) -> str:
        return json.dumps(self.policy_document(), indent=2, sort_keys=True) + "\n"
