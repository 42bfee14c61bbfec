"""The flag policy: every unit has a class, every build a variant; flags = render(template_of(class), variant,
compiler). Nothing else adds ISA flags."""

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import AmxforgeError
from ..paths import project_root
from .classes import ClassTable, Classification
from .isa import Compiler, Isa
from .render import Renderer
from .variants import Variant, VariantTable

__all__ = ["Compiler", "Policy", "UnitPolicy", "Variant", "AmxforgeError"]


@dataclass(frozen=True)
class UnitPolicy:
    source: str
    unit_class: str
    rule: str
    glob: str
    flags: tuple

    def as_dict(self) -> dict:
        return asdict(self) | {"flags": list(self.flags)}


class Policy:
    def __init__(self, root: Path = None):
        root = Path(root) if root else project_root()
        self.root = root
        self.isa = Isa.load(root / "toolchain" / "isa.toml")
        self.variants = VariantTable(root / "toolchain" / "variants.toml", self.isa)
        self.classes = ClassTable(root / "toolchain" / "classes.toml")
        self.renderer = Renderer(root / "templates")
        for cls in self.classes.classes:
            if not (self.renderer.folder / f"{cls}.j2").is_file():
                raise AmxforgeError(f"{self.renderer.folder}/{cls}.j2: missing; class {cls!r} needs a template")
        self._class_flags = lru_cache(maxsize=None)(self._render_class)
        self._render_samples()

    def _render_samples(self) -> None:
        """Every class template rendered once with a non-empty value in every list it may loop over (every family's
        features, the AMX set, a CUDA arch, host flags), so that a typo inside a loop that is empty for the variants
        at hand (the AMX loop for baseline) fails now, for every build, naming its line."""
        isa = self.isa
        context = {
            "level": isa.portable_level, "base": list(isa.features), "amx": list(isa.groups["amx"]),
            "amx_off": list(isa.groups["amx_off"]), "portable_level": isa.portable_level,
            "portable_tune": isa.portable_tune, "cuda_archs": ["90"], "variant": "sample", "compiler": "gcc",
            "flag": lambda f: isa.features[f].flag, "no_flag": lambda f: isa.features[f].no_flag,
            "march": lambda lv: isa.levels[lv].march, "host_flags": [isa.levels[isa.portable_level].march],
        }
        for cls in self.classes.classes:
            self.renderer.render(cls, context, gpu=cls in self.classes.gpu_classes)

    # --- variants ---------------------------------------------------------------------------------------
    def variant(self, name: str, host_features=None) -> Variant:
        if name == "auto":
            raise AmxforgeError("variant 'auto' is chosen from the probe: use amxforge.probe.choose_auto()")
        return self.variants.resolve(name, host_features)

    def classes_for(self, variant: Variant, cpu_only: bool = False) -> list:
        """The classes whose flags a variant renders: GPU classes only for CUDA variants (and never with cpu_only:
        what a C/C++ compiler must accept)."""
        return [cls for cls in self.classes.classes
                if cls not in self.classes.gpu_classes or (variant.cuda and not cpu_only)]

    def cpu_class(self, unit_class: str) -> str:
        """The class whose ISA flags a unit's CPU code gets: its own, or the host class for a GPU class."""
        return self.classes.host_class if unit_class in self.classes.gpu_classes else unit_class

    # --- rendering --------------------------------------------------------------------------------------
    def _render_class(self, unit_class: str, variant: Variant, compiler: Compiler, cuda_archs: tuple) -> tuple:
        isa = self.isa
        context = {
            "level": variant.level,
            "base": list(variant.features),
            "amx": list(variant.amx),
            "amx_off": list(isa.groups["amx_off"]),
            "portable_level": isa.portable_level,
            "portable_tune": isa.portable_tune,
            "cuda_archs": list(cuda_archs),
            "variant": variant.name,
            "compiler": compiler.family,
            "flag": lambda f: isa.flag(f, compiler),
            "no_flag": lambda f: isa.no_flag(f, compiler),
            "march": lambda lv: isa.march(lv, compiler),
        }
        if unit_class in self.classes.gpu_classes:
            context["host_flags"] = list(self._class_flags(self.classes.host_class, variant, compiler, ()))
        return tuple(self.renderer.render(unit_class, context, gpu=unit_class in self.classes.gpu_classes))

    def class_flags(self, unit_class: str, variant: Variant, compiler: Compiler, cuda_archs=()) -> tuple:
        return self._class_flags(unit_class, variant, compiler, tuple(cuda_archs))

    def class_features(self, unit_class: str, variant: Variant, compiler: Compiler) -> list:
        """The CPU features a class's rendered flags turn on (what its objects may contain)."""
        flags = self.class_flags(self.cpu_class(unit_class), variant, compiler)
        return sorted(self.isa.features_of_flags(flags))

    def classify(self, unit: str, source: Path = None) -> Classification:
        found = self.classes.classify(unit)
        if source is not None:
            self.classes.scan_file(unit, source, found)
        return found

    def unit(self, unit: str, source: Path, variant: Variant, compiler: Compiler, cuda_archs=()) -> UnitPolicy:
        """Class, rule and final ISA flags of one unit (path relative to its tree; source is the real file)."""
        found = self.classify(unit, source)
        flags = self.class_flags(found.unit_class, variant, compiler, cuda_archs)
        return UnitPolicy(unit, found.unit_class, found.rule, found.glob, flags)
