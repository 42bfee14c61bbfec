"""cuda_arch: validate a user's list against nvcc, or take the probed GPUs' compute capabilities."""

import re

from ..errors import AmxforgeError
from ..paths import toolchain_dir
from ..tomlfile import load_toml

# What a user may write in cuda_arch= (nvcc's own spellings, no others): 90, 120a, sm_90, sm_100f.
USER_ARCH = re.compile(r"(?:sm_)?(\d{2,3}[af]?)")
# A probed device's compute capability as the probe reports it: "9.0", "12.0".
DEVICE_CC = re.compile(r"(\d{1,2})\.(\d)")
# What the cuda class may render: -gencode for an arch, -Xcompiler=<ISA flag> for host code.
CUDA_FLAG = re.compile(r"-gencode=arch=compute_\d{2,3}[af]?,code=(?:sm|compute)_\d{2,3}[af]?|"
                       r"-Xcompiler=-m(?:(?:no-)?[a-z0-9][a-z0-9.-]*|(?:arch|tune)=[a-z0-9][a-z0-9_.-]*)")


def cuda_facts() -> dict:
    """toolchain/cuda.toml, checked against its schema: arch_specific, toolkit_parts."""
    return load_toml(toolchain_dir() / "cuda.toml")


SCONS = "cuda_arch="  # how the user gives the archs: scons' variable, or the CLI's option (CLI below)
CLI = "--cuda-arch "


def normalize(item: str, option: str = SCONS) -> str:
    """A user's arch: '90' / 'sm_90' -> '90', '120a' / 'sm_120a' -> '120a'; anything else is refused (no '1.20',
    no 'sm_90x', no 'compute_90')."""
    match = USER_ARCH.fullmatch(item.strip())
    if not match:
        raise AmxforgeError(f"{option.strip(' =')}: {item!r} is not an arch; write e.g. {option}90 or "
                            f"{option}'86;89;120a' (two or three digits, optionally sm_ before and a or f after)")
    return match.group(1)


def device_arch(cc: str, option: str = SCONS) -> str:
    """A probed device's compute capability '9.0' -> '90', '12.0' -> '120'."""
    match = DEVICE_CC.fullmatch(str(cc).strip())
    if not match:
        raise AmxforgeError(f"a CUDA device reports compute capability {cc!r}, not MAJOR.MINOR; pass {option}90 "
                            f"(its arch)")
    return match.group(1) + match.group(2)


def resolve_cuda_archs(requested, probe_result: dict, option: str = SCONS) -> tuple:
    """The archs to build, ascending (PTX goes to the last). Never `native` without a GPU to ask."""
    nvcc = probe_result["cuda"]["nvcc"]
    if not nvcc:
        raise AmxforgeError("a CUDA variant needs nvcc: install the CUDA toolkit or put its bin/ on PATH")
    supported = nvcc["archs"]
    devices = probe_result["cuda"]["devices"]
    items = [x for x in re.split(r"[;,\s]+", requested or "") if x]
    if not items or items == ["native"]:
        if not devices:
            raise AmxforgeError(f"no CUDA device visible here to take `native` archs from: pass {option}90 (or "
                                f"{option}'86;89;120'); amxforge never hands `native` to nvcc on a GPU-less builder")
        archs = {device_arch(d["cc"], option) for d in devices}
    else:
        archs = {normalize(x, option) for x in items}
    archs = sorted(archs, key=lambda a: (int(re.sub(r"\D", "", a)), a))
    for arch in archs:
        if arch.rstrip("abcdefghijklmnopqrstuvwxyz") not in supported:
            raise AmxforgeError(f"{option.strip(' =')} {arch} is not known to nvcc {nvcc['version']}; "
                                f"it supports: {' '.join(supported)}")
    return tuple(archs)


GENCODE = re.compile(r"-gencode=arch=compute_(\w+),code=(sm|compute)_(\w+)")


def gpu_code(flags) -> dict:
    """What the rendered cuda class's flags put into a binary: {"sass": [arch, ...], "ptx": [arch, ...]}."""
    out = {"sass": [], "ptx": []}
    for flag in flags:
        m = GENCODE.fullmatch(flag)
        if m:
            out["sass" if m.group(2) == "sm" else "ptx"].append(m.group(3))
    return out


def driver_number(nvcc_version: str) -> int:
    """The driver version (cuDriverGetVersion's number, 1000 * major + 10 * minor) a toolkit's code needs: 13.0.88 ->
    13000."""
    major, minor = (nvcc_version.split(".") + ["0"])[:2]
    return 1000 * int(major) + 10 * int(minor)


def arch_specific(archs, specific) -> tuple:
    """Blackwell block-scale MMA is not forward compatible: a fork that uses it needs 12.0 built as sm_120a."""
    return tuple(a + "a" if a in specific else a for a in archs)
