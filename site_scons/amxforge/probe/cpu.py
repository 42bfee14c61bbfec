"""CPU: vendor, family, model and feature flags from /proc/cpuinfo (Linux spellings); archspec's name as info."""


CPUINFO = "/proc/cpuinfo"


def first_processor(text: str) -> dict:
    """The key/value pairs of the first processor block (all cores of one host share the flags)."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def parse_cpuinfo(text: str) -> dict:
    fields = first_processor(text)
    flags = fields.get("flags", "").split()
    return {
        "vendor": fields.get("vendor_id", ""),
        "family": int(fields["cpu family"]) if fields.get("cpu family", "").isdigit() else None,
        "model": int(fields["model"]) if fields.get("model", "").isdigit() else None,
        "model_name": fields.get("model name", ""),
        "features": sorted(set(flags)),
    }


def uarch_name(vendor: str, features) -> str:
    """archspec's microarchitecture name for this feature set (information only: a VM hiding one niche feature
    makes archspec call a Sapphire/Emerald Rapids guest `icelake`, so flags never come from this name)."""
    import archspec.cpu.detect as detect
    from archspec.cpu.microarchitecture import Microarchitecture

    info = Microarchitecture(name="", parents=[], vendor=vendor, features=set(features), compilers={})
    candidates = detect.compatible_microarchitectures(info)
    generic = [c for c in candidates if c.vendor == "generic"]
    if not generic:
        return None

    def depth(item):
        return len(item.ancestors), len(item.features)

    best_generic = max(generic, key=depth)
    specific = [c for c in candidates if c > best_generic]
    return max(specific, key=depth).name if specific else best_generic.name


def read_cpuinfo_text(path: str = None) -> str:
    """A regular file only (a FIFO given as --cpuinfo would block forever), at most 16 MiB."""
    from ..atomic import read_text
    return read_text(path or CPUINFO, cap=16 << 20)


def probe_cpu(text: str) -> dict:
    cpu = parse_cpuinfo(text)
    try:
        cpu["uarch"] = uarch_name(cpu["vendor"], cpu["features"])
    except Exception as exc:  # archspec data may not know a brand-new CPU: information only
        cpu["uarch"] = None
        cpu["uarch_error"] = str(exc)
    return cpu
