"""cuda_arch: validate a user's list against nvcc, or take the probed GPUs' compute capabilities."""

import re

from ..errors import AmxforgeError

_ARCH = re.compile(r"^(?:sm_|compute_)?(\d+)\.?(\d*)([a-z]?)$")


def normalize(item: str) -> str:
    """'9.0' / '90' / 'sm_90' -> '90'; '12.0a' / '120a' -> '120a'."""
    match = _ARCH.match(item.strip())
    if not match:
        raise AmxforgeError(f"cuda_arch: {item!r} is not an arch; write e.g. cuda_arch=90 or cuda_arch=\"86;89;120\"")
    major, minor, suffix = match.groups()
    return f"{major}{minor}{suffix}" if minor else f"{major}{suffix}"


def resolve_cuda_archs(requested, probe_result: dict) -> tuple:
    """The archs to build, ascending (PTX goes to the last). Never `native` without a GPU to ask."""
    nvcc = probe_result["cuda"]["nvcc"]
    if not nvcc:
        raise AmxforgeError("a CUDA variant needs nvcc: install the CUDA toolkit or put its bin/ on PATH")
    supported = nvcc["archs"]
    devices = probe_result["cuda"]["devices"]
    items = [x for x in re.split(r"[;,\s]+", requested or "") if x]
    if not items or items == ["native"]:
        if not devices:
            raise AmxforgeError("no CUDA device visible here to take `native` archs from: pass cuda_arch=90 "
                                "(or \"86;89;120\"); amxforge never hands `native` to nvcc on a GPU-less builder")
        items = [d["cc"] for d in devices]
    archs = sorted({normalize(x) for x in items}, key=lambda a: (int(re.sub(r"\D", "", a)), a))
    for arch in archs:
        if arch.rstrip("abcdefghijklmnopqrstuvwxyz") not in supported:
            raise AmxforgeError(f"cuda_arch {arch} is not known to nvcc {nvcc['version']}; "
                                f"it supports: {' '.join(supported)}")
    return tuple(archs)


def arch_specific(archs, specific) -> tuple:
    """Blackwell block-scale MMA is not forward compatible: a fork that uses it needs 12.0 built as sm_120a."""
    return tuple(a + "a" if a in specific else a for a in archs)
