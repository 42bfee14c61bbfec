"""OS support for AMX on Linux: is the tile state enabled (XCR0 bits 17/18), may this process use it?

Linux >= 5.16 requires arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) before the first tile instruction,
or the process gets SIGILL. Python reaches arch_prctl through libc.syscall (ctypes)."""

import ctypes
import errno
import os
import platform

SYS_ARCH_PRCTL = 158  # x86-64
ARCH_GET_XCOMP_SUPP = 0x1021
ARCH_GET_XCOMP_PERM = 0x1022
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILECFG = 17
XFEATURE_XTILEDATA = 18


def _errtext(err: int) -> str:
    return f"{errno.errorcode.get(err, err)} ({os.strerror(err)})"


def probe_os() -> dict:
    result = {"kernel": platform.release(), "xcr0_tile": False, "amx_permitted": False, "error": None}
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        result["error"] = f"AMX needs Linux on x86-64; this is {platform.system()} {platform.machine()}"
        return result
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    mask = ctypes.c_uint64(0)
    if syscall(ctypes.c_long(SYS_ARCH_PRCTL), ctypes.c_long(ARCH_GET_XCOMP_SUPP), ctypes.byref(mask)) != 0:
        err = ctypes.get_errno()
        result["error"] = (f"arch_prctl(ARCH_GET_XCOMP_SUPP) failed: {_errtext(err)}; "
                           f"Linux >= 5.16 (5.17 in KVM guests) is needed for AMX")
        return result
    tile_bits = (1 << XFEATURE_XTILECFG) | (1 << XFEATURE_XTILEDATA)
    result["xcr0_tile"] = (mask.value & tile_bits) == tile_bits
    if not result["xcr0_tile"]:
        result["error"] = ("the OS has not enabled the AMX tile state (XCR0 bits 17/18 clear): no AMX on this "
                           "CPU, or the hypervisor hides it")
        return result
    if syscall(ctypes.c_long(SYS_ARCH_PRCTL), ctypes.c_long(ARCH_REQ_XCOMP_PERM),
               ctypes.c_ulong(XFEATURE_XTILEDATA)) != 0:
        err = ctypes.get_errno()
        result["error"] = f"arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) refused: {_errtext(err)}"
        return result
    result["amx_permitted"] = True
    return result
