"""The launcher's table (share/amxforge/launch.tsv; read by kernels/launcher/launch.c): variants best first, as
(name, directory relative to the root, the CPU features it needs, "gpu" or ""); for a package also every file of each
variant with its size and CRC-32 (checked by the selector at every start), and the manifest's CRC-32."""

from .templating import render


def launch_table(variants, package: str = None, files=None, manifest=None) -> str:
    context = {"variants": variants, "package": package or ""}
    if files is not None:
        context["files"] = files
    if manifest is not None:
        context["manifest"] = manifest
    return render("launcher", "launch.tsv.j2", **context)
