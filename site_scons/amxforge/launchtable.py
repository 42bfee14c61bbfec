"""The launcher's table (share/amxforge/launch.tsv; read by kernels/launcher/launch.c): variants best first, as
(name, directory relative to the root, the CPU features it needs, "gpu" or ""); for a package also every file of each
variant with its size and CRC-32 (checked by the selector at every start), and the manifest's CRC-32; and the
variables a variant's program gets (fork/backend.py: GGML_BACKEND_PATH to that variant's backend library)."""

import zlib

from .templating import render


def gpu_fields(needs) -> str:
    """A CUDA variant's extra fields (gpu, SASS archs, the PTX arch or -, the driver number); "" for a CPU variant."""
    if not needs:
        return ""
    return "\t".join(["gpu", ",".join(needs["sass"]) or "-", (needs["ptx"] or ["-"])[-1], str(needs["driver"])])


def launch_table(variants, package: str = None, files=None, manifest=None, env=()) -> str:
    """The table, ending with the line the launcher checks everything before it against: `end`, the number of lines
    before it and their CRC-32 (a table cut at a line boundary, or missing a line, is damaged). variants: (name,
    directory, required CPU features, its gpu_needs or None); env: (variant, NAME, path under its directory) for the
    variables the launcher sets where they are unset."""
    variants = [(name, folder, features, gpu_fields(needs)) for name, folder, features, needs in variants]
    context = {"variants": variants, "package": package or "", "env": list(env)}
    if files is not None:
        context["files"] = files
    if manifest is not None:
        context["manifest"] = manifest
    body = render("launcher", "launch.tsv.j2", **context)
    return body + f"end\t{body.count(chr(10))}\t{zlib.crc32(body.encode()):08x}\n"
