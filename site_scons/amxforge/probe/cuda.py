"""CUDA: devices and compute capability (libcuda through ctypes, else nvidia-smi), nvcc and its archs."""

import ctypes
import re
import shutil
import subprocess

CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
NVIDIA_SMI_QUERY = ["--query-gpu=name,compute_cap", "--format=csv,noheader"]
_CC = re.compile(r"^\d+\.\d+$")


def devices_from_libcuda():
    """[{index, name, cc}] through the driver API, or None when libcuda is absent or cuInit fails."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    if cuda.cuInit(0) != 0:
        return None
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return None
    devices = []
    for index in range(count.value):
        dev = ctypes.c_int(0)
        if cuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
            continue
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, dev)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
        devices.append({"index": index, "name": name.value.decode(errors="replace"),
                        "cc": f"{major.value}.{minor.value}"})
    return devices


def parse_nvidia_smi(text: str) -> list:
    """Lines "NAME, MAJOR.MINOR"; anything else ("No devices were found", "[N/A]") is not a device."""
    devices = []
    for line in text.splitlines():
        name, sep, cc = line.rpartition(",")
        cc = cc.strip()
        if sep and _CC.match(cc):
            devices.append({"index": len(devices), "name": name.strip(), "cc": cc})
    return devices


def devices_from_nvidia_smi():
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else []


def parse_nvcc_version(text: str):
    match = re.search(r"release [\d.]+, V([\d.]+)", text)
    return match.group(1) if match else None


def parse_gpu_archs(text: str) -> list:
    """`nvcc --list-gpu-arch` prints compute_75 ... compute_121 (one per line): ["75", ..., "121"]."""
    return [m.group(1) for m in re.finditer(r"compute_(\d+[a-z]?)\b", text)]


def find_nvcc():
    return shutil.which("nvcc") or (shutil.which("nvcc", path="/usr/local/cuda/bin"))


def probe_nvcc():
    nvcc = find_nvcc()
    if not nvcc:
        return None
    try:
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30)
        archs = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"path": nvcc, "version": parse_nvcc_version(version.stdout),
            "archs": parse_gpu_archs(archs.stdout) if archs.returncode == 0 else []}


def probe_cuda() -> dict:
    devices = devices_from_libcuda()
    source = "libcuda"
    if devices is None:
        devices, source = devices_from_nvidia_smi(), "nvidia-smi"
    return {"nvcc": probe_nvcc(), "devices": devices, "source": source if devices else None}
